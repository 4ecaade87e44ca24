#pragma once
// Log-probabilities as OpenAI and llama-server report them: log-softmax of the raw logits (before
// temperature, penalties or truncation), for the chosen token and the most likely alternatives.
// A token's text is its piece as the answer's text has it (control tokens: "").
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace snapvk {
class Tokenizer;
}

namespace snapvk::server {

// One alternative: a token, its text and its log-probability.
struct TopLogprob {
  int32_t token = 0;
  std::string piece;
  float logprob = 0;
};

// One token of a prompt or an answer with its log-probability (none for a prompt's first token,
// which nothing predicts) and the `top` most likely tokens at its position.
struct TokenLogprob {
  int32_t token = 0;
  std::string piece;
  std::optional<float> logprob;
  std::vector<TopLogprob> top;
};

// The log-probability of `token` after `logits` and the `n_top` most likely tokens (highest
// first, lowest id on ties).
TokenLogprob token_logprob(const Tokenizer& tok, std::span<const float> logits, int32_t token, uint32_t n_top);

}  // namespace snapvk::server
