#pragma once
// The generation loop: after a prompt, choose a token from the logits, stream it, feed it back,
// until a stop condition. `snapvk run`, the C API, `profile` and `eval needle` all use it.
#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "host/model/tokenizer.h"
#include "host/session/sampler.h"
#include "host/session/session.h"

namespace snapvk {

enum class StopReason { EndOfGeneration, MaxTokens, ContextFull, Callback, Cancelled };
const char* stop_reason_name(StopReason r);

struct GenerateOptions {
  uint32_t max_tokens = 0;  // 0: until the context is full
  bool stop_at_eog = true;  // an end-of-generation token ends the loop (it is neither emitted nor decoded)
  // More tokens that end generation as the vocabulary's own (Tokenizer::is_eog) do: a chat
  // template's end of turn (ChatTemplate::stop_tokens).
  std::vector<int32_t> stop_tokens;
  // true: every emitted token enters the cache, so the conversation can go on (the C API);
  // false: the last one is not decoded (one step saved when nothing follows: `snapvk run`).
  bool decode_last = true;
  // Picks each next token from the logits (default: the sampler). Teacher forcing, greedy
  // references and per-step measurements (profile) go here.
  std::function<int32_t(std::span<const float> logits)> choose;
  // Each emitted token with its piece (which may end inside a UTF-8 sequence); return false to
  // stop after it.
  std::function<bool(int32_t token, std::string_view piece)> on_token;
  // Text as whole UTF-8 characters, as soon as they are complete (what a terminal may print).
  std::function<void(std::string_view text)> on_text;
  // After a token entered the cache, with the logits that follow it.
  std::function<void(int32_t token, std::span<const float> logits)> on_decoded;
  // Set by another thread to stop before the next token (cleared when seen).
  std::atomic<bool>* cancel = nullptr;
  // Feeds a token back instead of Session::decode, returning the logits after it (a server
  // decodes the tokens of several sessions in one forward pass: Session::decode_batch).
  std::function<std::span<const float>(int32_t token)> decode;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // emitted tokens (an end-of-generation token is not one)
  std::string text;             // their pieces
  StopReason stop = StopReason::MaxTokens;
  int32_t last_token = -1;  // the last token chosen (the end-of-generation one when it stopped there)
  uint32_t decoded = 0;     // tokens fed back into the cache
  double decode_ms = 0;     // time in Session::decode
  double wall_ms = 0;       // time in the loop
};

// Generates after `logits` (those of the session's last token). Fills `r` as it goes, so that a
// caller still sees what was generated when a decode throws; Cancelled from the session ends the
// loop with StopReason::Cancelled.
void generate(Session& s, Sampler& sampler, std::span<const float> logits, const GenerateOptions& o, GenerateResult& r);

// Splits a byte stream into whole UTF-8 characters: push() returns what is complete, holding back
// the start of a character whose bytes have not all arrived; bytes that cannot start or continue
// a character pass through at once. flush() returns what is held.
class Utf8Stream {
 public:
  std::string push(std::string_view bytes);
  std::string flush();

 private:
  std::string pending_;
};

}  // namespace snapvk
