#pragma once
// Next-token sampling on the host, in llama.cpp's order: repetition penalty, top-k, top-p,
// min-p, temperature, then a draw. temp <= 0 is greedy (argmax, lowest id on ties).
#include <cstdint>
#include <deque>
#include <random>
#include <span>
#include <vector>

namespace snapvk {

struct SamplerParams {
  float temp = 0.8f;
  int32_t top_k = 40;           // <= 0: off
  float top_p = 0.95f;          // >= 1: off
  float min_p = 0.05f;          // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int32_t repeat_last_n = 64;   // tokens the penalty looks back over
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerParams& p);
  int32_t sample(std::span<const float> logits);
  void accept(int32_t token);  // remembers the token for the repetition penalty
  const SamplerParams& params() const { return p_; }

 private:
  SamplerParams p_;
  std::mt19937_64 rng_;
  std::deque<int32_t> recent_;
  std::vector<std::pair<float, int32_t>> cand_;
};

int32_t argmax(std::span<const float> logits);

// log(sum(exp(logits))), in double: a logit minus it is its token's log-probability (log-softmax),
// as perplexity, KL and the server's logprobs report them.
double log_sum_exp(std::span<const float> logits);
// out[i] = logits[i] - log_sum_exp(logits)
void log_softmax(std::span<const float> logits, std::vector<double>& out);

}  // namespace snapvk
