// Activations of the gated feed-forward (swiglu.comp, matvec.comp's GLU).
// GELU is its tanh approximation (ggml_gelu, Gemma's gelu_pytorch_tanh): 0.5 x (1 + tanh(z)) =
// x / (1 + exp(-2z)), z = sqrt(2/pi) (x + 0.044715 x^3), which cannot produce NaN for large |x|
// (exp overflows to inf, and x / inf = 0).
float silu(float a) { return a / (1.0 + exp(-a)); }
float gelu_tanh(float a) {
  const float z = 0.7978845608 * (a + 0.044715 * a * a * a);
  return a / (1.0 + exp(-2.0 * z));
}
