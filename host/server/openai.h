#pragma once
// The OpenAI API's JSON as snapvk reads and writes it: request bodies of /v1/chat/completions and
// /v1/completions checked field by field into a GenerationRequest (every problem is an ApiError
// naming the field, never an exception from the JSON library), and the response, stream chunk
// and error objects. No model or device work here.
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/kv/kv_policy.h"
#include "host/model/chat_template.h"
#include "host/server/logprobs.h"
#include "host/session/sampler.h"
#include "runtime/error.h"

namespace snapvk::server {

using json = nlohmann::json;

// A request the server refuses: the HTTP status and OpenAI's error object.
struct ApiError : std::runtime_error {
  ApiError(int status, const std::string& message, std::string param = {}, std::string code = {});
  int status;         // 4xx or 5xx
  std::string type;   // OpenAI's type: invalid_request_error, authentication_error, ...
  std::string param;  // the request field it is about ("" when none)
  std::string code;   // a machine-readable code ("" when none)
};

// {"error": {"message", "type", "param", "code"}} (param and code null when empty).
json error_json(const ApiError& e);

// What the server uses for a field the request leaves out.
struct RequestDefaults {
  SamplerParams sampler;      // --temp, --top-k, ... of `snapvk serve`
  uint32_t max_tokens = 512;  // --n-predict: a request without max_tokens
  KvPolicyOptions kv;         // --kv-policy, --kv-budget, ... of `snapvk serve`
  KvTypes kv_types;           // --kv-type, --kv-type-k, --kv-type-v of `snapvk serve`
  std::string model_id;       // what /v1/models lists and requests name
};

// One generation request, checked.
struct GenerationRequest {
  bool chat = false;                  // /v1/chat/completions (messages) or /v1/completions (prompt)
  std::vector<ChatMessage> messages;  // chat
  std::string prompt;                 // completion: text (tokenized with BOS, as the model wants)
  std::vector<int32_t> prompt_tokens;  // completion: token ids given instead, used verbatim (no BOS added)
  // Completion: every prompt of the request, in order ("prompt" may be an array of texts or of
  // token-id arrays); choices() makes one request per prompt and choice.
  std::vector<std::variant<std::string, std::vector<int32_t>>> prompts;
  uint32_t n = 1;      // choices per prompt
  uint32_t index = 0;  // this request's choice in the response (choices())
  uint32_t max_tokens = 0;            // tokens to generate at most (the context may end it sooner)
  SamplerParams sampler;
  std::vector<std::string> stop;  // generation ends before any of these texts
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with usage
  KvPolicyOptions kv;          // the cache policy of the session that serves it
  KvTypes kv_types;            // and its storage: kv_type (both), kv_type_k, kv_type_v
  std::string kv_field;        // the first kv_* field the request gave ("" when none): a pack keeps its own policy
  std::string pack;            // a knowledge pack by name (--packs DIR): its document comes before the prompt
  // Log-probabilities: -1 none; else of each answer token, with this many alternatives (chat:
  // logprobs true and top_logprobs; completion: logprobs N).
  int32_t logprobs = -1;
  bool echo = false;  // completion: the prompt comes back before the answer (with logprobs: scored too)
  bool score_prompt() const { return echo && logprobs >= 0; }
};

// Throws ApiError (400 with the field as param; 404 for an unknown model) for anything OpenAI's
// API or snapvk's extensions (kv_policy, kv_budget, kv_ratio, kv_window, pack) would not accept.
// A pack's name is checked here (a name, never a path); whether it exists, by the PackLibrary.
GenerationRequest parse_chat_request(const std::string& body, const RequestDefaults& d);
GenerationRequest parse_completion_request(const std::string& body, const RequestDefaults& d);

// One request per choice of the response: each prompt n times, in order, with `index` set and
// prompts cleared; choice i of a prompt draws with seed + i (the same seed, the same choices).
std::vector<GenerationRequest> choices(const GenerationRequest& r);

// Throws ApiError (400, param "pack") unless `name` is a plain file stem: not empty, no path
// separator, no "..", no leading dot, no control characters.
void check_pack_name(const std::string& name);

// Why generation ended, in OpenAI's terms: "stop" or "length".
struct Outcome {
  std::string text;
  std::string finish_reason;  // "stop", "length"
  uint32_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
  uint64_t kv_bytes = 0, kv_bytes_full = 0, kv_bytes_allocated = 0;  // the session's cache after the request
  std::string kv_policy;
  std::string kv_type;       // its K/V storage ("q4_0", "q8_0/q4_0")
  std::string pack;          // the request's pack ("" when none)
  uint32_t pack_tokens = 0;  // its positions: counted in prompt_tokens and cached_tokens
  int slot = -1;
  double ttft_ms = 0;  // from arrival to the first token
  std::vector<TokenLogprob> logprobs;  // of the answer's tokens (a request's logprobs)
  std::vector<TokenLogprob> prompt_logprobs;  // of the prompt's tokens (echo with logprobs)
  std::string prompt_text;                    // echo: the prompt's tokens as text
};

// The whole response object (non-streamed; one outcome per choice, in choices() order), and one
// stream chunk's object.
json completion_response(const GenerationRequest& r, const std::vector<Outcome>& o, const std::string& id,
                         const std::string& model, int64_t created);
json stream_chunk(const GenerationRequest& r, const std::string& id, const std::string& model, int64_t created,
                  const std::string& text, const std::optional<std::string>& finish_reason, bool first);
json usage_json(const std::vector<Outcome>& o);  // the choices' tokens summed, as OpenAI counts them
json snapvk_json(const Outcome& o);

}  // namespace snapvk::server
