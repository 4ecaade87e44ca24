#include "host/server/openai.h"

#include <cmath>
#include <limits>
#include <type_traits>

#include "host/session/options.h"

namespace snapvk::server {

namespace {

constexpr int64_t kMaxChoices = 128;     // choices one request may ask for (prompts times n)
constexpr int64_t kMaxTopLogprobs = 20;  // alternatives per token, OpenAI's bound for chat

const char* type_of_status(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "invalid_request_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable_error";
  }
  return status < 500 ? "invalid_request_error" : "server_error";
}

[[noreturn]] void bad(const std::string& field, const std::string& message, const std::string& code = "invalid_value") {
  throw ApiError(400, message, field, code);
}

json parse_object(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw ApiError(400, "the request body is not valid JSON", "", "invalid_json");
  if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object", "", "invalid_json");
  return j;
}

// The field's value when present and not null.
const json* field(const json& j, const char* name) {
  auto it = j.find(name);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::optional<int64_t> get_int(const json& j, const char* name, int64_t lo, int64_t hi) {
  const json* v = field(j, name);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) bad(name, std::string(name) + " must be an integer", "invalid_type");
  // An unsigned beyond int64 reads as negative: it is out of range either way.
  const int64_t x = v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX : v->get<int64_t>();
  if (x < lo || x > hi)
    bad(name, std::string(name) + " must be between " + std::to_string(lo) + " and " + std::to_string(hi) + " (got " +
                  std::to_string(x) + ")");
  return x;
}

std::optional<double> get_number(const json& j, const char* name, double lo, double hi) {
  const json* v = field(j, name);
  if (!v) return std::nullopt;
  if (!v->is_number()) bad(name, std::string(name) + " must be a number", "invalid_type");
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi))
    bad(name, std::string(name) + " must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  return x;
}

std::optional<bool> get_bool(const json& j, const char* name) {
  const json* v = field(j, name);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) bad(name, std::string(name) + " must be true or false", "invalid_type");
  return v->get<bool>();
}

std::optional<std::string> get_string(const json& j, const char* name) {
  const json* v = field(j, name);
  if (!v) return std::nullopt;
  if (!v->is_string()) bad(name, std::string(name) + " must be a string", "invalid_type");
  return v->get<std::string>();
}

std::vector<std::string> parse_stop(const json& j) {
  const json* v = field(j, "stop");
  if (!v) return {};
  std::vector<std::string> out;
  if (v->is_string())
    out.push_back(v->get<std::string>());
  else if (v->is_array() && v->size() <= 4)
    for (const json& s : *v) {
      if (!s.is_string()) bad("stop", "stop must be a string or an array of at most 4 strings", "invalid_type");
      out.push_back(s.get<std::string>());
    }
  else
    bad("stop", "stop must be a string or an array of at most 4 strings", "invalid_type");
  for (const std::string& s : out)
    if (s.empty()) bad("stop", "a stop sequence must not be empty");
  return out;
}

// One KV option of the request into its field (the option table's bounds and names).
template <class T>
void read_option(const json& j, const OptionInfo& o, T& field) {
  if constexpr (std::is_enum_v<T>) {
    if (auto s = get_string(j, o.key)) {
      const auto v = parse_in(names(field), *s);
      if (!v) bad(o.key, "unknown " + std::string(o.key) + " '" + *s + "' (" + names_of(names(field)) + ")");
      field = *v;
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    if (auto x = get_number(j, o.key, o.lo, o.hi)) field = T(*x);
  } else {
    if (auto x = get_int(j, o.key, int64_t(o.lo), int64_t(o.hi))) field = T(*x);
  }
}

// The request's KV options over the server's: every option of the table a request may set.
void parse_kv(const json& j, GenerationRequest& r) {
  const KvPolicy before = r.kv.policy;
  visit_kv_options(r.kv, [&](const OptionInfo& o, auto& v) {
    if (o.scope != kRequest || !field(j, o.key)) return;
    if (r.kv_field.empty()) r.kv_field = o.key;
    read_option(j, o, v);
  });
  // The server's budget belongs to its own policy; a budget and a ratio are one choice (the
  // ratio's when a request gives both).
  const bool budget = field(j, opt::kv_budget.name), ratio = field(j, opt::kv_ratio.name);
  if (ratio && r.kv.ratio <= 0) bad(opt::kv_ratio.name, "kv_ratio must be in (0, 1]");
  if (r.kv.policy != before && !budget) r.kv.budget = 0;
  if (r.kv.policy != before && !ratio) r.kv.ratio = 0;
  if (ratio)
    r.kv.budget = 0;
  else if (budget)
    r.kv.ratio = 0;
  try {
    r.kv.validate();
  } catch (const Error& e) {
    throw ApiError(400, e.what(), param_name(e.param()), "invalid_value");
  }
}

// The cache's storage: kv_type sets K and V, kv_type_k and kv_type_v one each (after it).
void parse_kv_types(const json& j, GenerationRequest& r) {
  struct Field {
    const char* key;
    bool k, v;  // the caches it sets
  };
  for (const Field f : {Field{"kv_type", true, true}, Field{opt::kv_type_k.name, true, false},
                        Field{opt::kv_type_v.name, false, true}})
    if (auto s = get_string(j, f.key)) {
      const auto t = parse_kv_type(*s);
      if (!t) bad(f.key, "unknown " + std::string(f.key) + " '" + *s + "' (" + names_of(names(KvType{})) + ")");
      if (f.k) r.kv_types.k = *t;
      if (f.v) r.kv_types.v = *t;
      if (r.kv_field.empty()) r.kv_field = f.key;
    }
}

// The fields both endpoints share.
GenerationRequest parse_common(const json& j, const RequestDefaults& d, bool chat) {
  GenerationRequest r;
  if (auto m = get_string(j, "model"); m && *m != d.model_id)
    throw ApiError(404, "the model '" + *m + "' does not exist (this server has '" + d.model_id + "')", "model",
                   "model_not_found");
  if (auto p = get_string(j, "pack")) {
    check_pack_name(*p);
    r.pack = *p;
  }
  r.n = uint32_t(get_int(j, "n", 1, kMaxChoices).value_or(1));
  if (const json* t = field(j, "tools"); t && !(t->is_array() && t->empty()))
    bad("tools", "tool calls are not supported", "unsupported");
  for (const char* p : {"presence_penalty", "frequency_penalty"})
    if (get_number(j, p, -2, 2).value_or(0) != 0)
      bad(p, std::string(p) + " is not supported (use repeat_penalty)", "unsupported");
  r.max_tokens = d.max_tokens;
  // Completion with echo: an answer of no tokens asks to score the prompt (what evaluation
  // harnesses send).
  r.echo = !chat && get_bool(j, "echo").value_or(false);
  for (const char* name : {"max_tokens", "max_completion_tokens"})
    if (auto m = get_int(j, name, r.echo ? 0 : 1, kMaxContext)) r.max_tokens = uint32_t(*m);
  r.sampler = d.sampler;
  if (auto t = get_number(j, "temperature", 0, 2)) r.sampler.temp = float(*t);
  if (auto p = get_number(j, "top_p", 0, 1)) r.sampler.top_p = float(*p);
  if (auto k = get_int(j, "top_k", -1, INT32_MAX)) r.sampler.top_k = int32_t(*k);
  if (auto p = get_number(j, "min_p", 0, 1)) r.sampler.min_p = float(*p);
  if (auto p = get_number(j, "repeat_penalty", 0.01, 100)) r.sampler.repeat_penalty = float(*p);
  if (auto s = get_int(j, "seed", INT64_MIN, INT64_MAX)) r.sampler.seed = uint64_t(*s);
  r.stop = parse_stop(j);
  r.stream = get_bool(j, "stream").value_or(false);
  if (const json* so = field(j, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "stream_options must be an object", "invalid_type");
    r.include_usage = get_bool(*so, "include_usage").value_or(false);
  }
  r.kv = d.kv;
  parse_kv(j, r);
  r.kv_types = d.kv_types;
  parse_kv_types(j, r);
  return r;
}

// What streaming and scoring a prompt cannot go with (after the endpoint's own fields).
void check_logprobs(const GenerationRequest& r) {
  if (r.stream && r.logprobs >= 0) bad("logprobs", "logprobs are not streamed: ask without stream", "unsupported");
  if (r.stream && r.echo) bad("echo", "echo is not streamed: ask without stream", "unsupported");
  if (!r.score_prompt()) return;
  // Scoring the prompt needs the logits after each of its tokens, which a compressed or a
  // pack's cache never had.
  if (r.kv.compresses())
    bad("echo", "echo with logprobs scores every prompt token: it needs kv_policy full (the request's is " +
                    std::string(kv_policy_name(r.kv.policy)) + ")");
  if (!r.pack.empty()) bad("echo", "echo with logprobs does not go with pack: the pack's tokens were never scored");
}

// "prompt": a text, token ids, or an array of texts or of token-id arrays (one choice each).
std::vector<std::variant<std::string, std::vector<int32_t>>> parse_prompts(const json& j) {
  const json* p = field(j, "prompt");
  if (!p) bad("prompt", "prompt is required", "missing_field");
  const char* shape = "prompt must be a string, an array of token ids, or an array of strings or of token-id arrays";
  auto ids = [&](const json& a) {
    std::vector<int32_t> out;
    for (const json& t : a) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX)
        bad("prompt", "a token id must be a non-negative integer", "invalid_type");
      out.push_back(int32_t(t.get<int64_t>()));
    }
    if (out.empty()) bad("prompt", "a prompt of token ids must not be empty");
    return out;
  };
  auto text = [&](const json& s) {
    if (s.get_ref<const std::string&>().empty()) bad("prompt", "prompt must not be empty");
    return s.get<std::string>();
  };
  std::vector<std::variant<std::string, std::vector<int32_t>>> out;
  if (p->is_string()) {
    out.push_back(text(*p));
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
    out.push_back(ids(*p));
  } else if (p->is_array() && !p->empty()) {
    for (const json& e : *p) {
      if (e.is_string())
        out.push_back(text(e));
      else if (e.is_array())
        out.push_back(ids(e));
      else
        bad("prompt", shape, "invalid_type");
    }
  } else {
    bad("prompt", p->is_array() ? "prompt must not be an empty array" : shape, "invalid_type");
  }
  return out;
}

// A message's content: a string, or an array of text parts ({"type": "text", "text": ...}).
std::string message_content(const json& c) {
  if (c.is_null()) return {};
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) bad("messages", "a message's content must be a string or an array of text parts", "invalid_type");
  std::string out;
  for (const json& part : c) {
    if (!part.is_object() || part.value("type", json()) != "text" || !part.contains("text") ||
        !part["text"].is_string())
      bad("messages", "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported", "unsupported");
    out += part["text"].get<std::string>();
  }
  return out;
}

}  // namespace

ApiError::ApiError(int status_, const std::string& message, std::string param_, std::string code_)
    : std::runtime_error(message),
      status(status_),
      type(type_of_status(status_)),
      param(std::move(param_)),
      code(std::move(code_)) {}

json error_json(const ApiError& e) {
  json err = {{"message", e.what()}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return {{"error", err}};
}

void check_pack_name(const std::string& name) {
  auto refuse = [&](const std::string& why) {
    throw ApiError(400, "pack must be the name of a pack in --packs (" + why + ")", "pack", "invalid_value");
  };
  if (name.empty()) refuse("it is empty");
  if (name.size() > 255) refuse("longer than a file name");
  if (name.find_first_of("/\\") != std::string::npos) refuse("a name, not a path: no '/' or '\\'");
  if (name.find("..") != std::string::npos) refuse("no '..'");
  if (name[0] == '.') refuse("it must not start with '.'");
  for (unsigned char ch : name)
    if (ch < 0x20 || ch == 0x7f) refuse("no control characters");
}

GenerationRequest parse_chat_request(const std::string& body, const RequestDefaults& d) {
  const json j = parse_object(body);
  GenerationRequest r = parse_common(j, d, true);
  r.chat = true;
  const auto top = get_int(j, "top_logprobs", 0, kMaxTopLogprobs);
  if (get_bool(j, "logprobs").value_or(false))
    r.logprobs = int32_t(top.value_or(0));
  else if (top)
    bad("top_logprobs", "top_logprobs needs logprobs: true", "invalid_value");
  check_logprobs(r);
  const json* msgs = field(j, "messages");
  if (!msgs) bad("messages", "messages is required", "missing_field");
  if (!msgs->is_array() || msgs->empty()) bad("messages", "messages must be a non-empty array", "invalid_type");
  for (const json& m : *msgs) {
    if (!m.is_object()) bad("messages", "each message must be an object with role and content", "invalid_type");
    const auto role = get_string(m, "role");
    if (!role) bad("messages", "each message needs a role", "missing_field");
    if (*role != "system" && *role != "user" && *role != "assistant" && *role != "developer")
      bad("messages", "unknown role '" + *role + "' (system, developer, user, assistant)");
    r.messages.push_back({*role == "developer" ? "system" : *role, message_content(m.value("content", json()))});
  }
  return r;
}

GenerationRequest parse_completion_request(const std::string& body, const RequestDefaults& d) {
  const json j = parse_object(body);
  GenerationRequest r = parse_common(j, d, false);
  r.prompts = parse_prompts(j);
  if (const json* lp = field(j, "logprobs"); lp && lp->is_boolean())  // what chat takes; some clients send it here
    r.logprobs = lp->get<bool>() ? 0 : -1;
  else if (auto n = get_int(j, "logprobs", 0, kMaxTopLogprobs))
    r.logprobs = int32_t(*n);
  check_logprobs(r);
  if (r.prompts.size() * r.n > kMaxChoices)
    bad("n", std::to_string(r.prompts.size()) + " prompts times n = " + std::to_string(r.n) + " choices; at most " +
                 std::to_string(kMaxChoices));
  return r;
}

std::vector<GenerationRequest> choices(const GenerationRequest& r) {
  std::vector<GenerationRequest> out;
  const size_t prompts = r.chat ? 1 : r.prompts.size();
  for (size_t p = 0; p < prompts; ++p)
    for (uint32_t i = 0; i < r.n; ++i) {
      GenerationRequest c = r;
      c.prompts.clear();
      if (!r.chat) {
        if (auto* text = std::get_if<std::string>(&r.prompts[p]))
          c.prompt = *text, c.prompt_tokens.clear();
        else
          c.prompt_tokens = std::get<std::vector<int32_t>>(r.prompts[p]), c.prompt.clear();
      }
      c.index = uint32_t(out.size());
      c.sampler.seed = r.sampler.seed + i;
      out.push_back(std::move(c));
    }
  return out;
}

json usage_json(const std::vector<Outcome>& os) {
  uint64_t prompt = 0, completion = 0, cached = 0;
  for (const Outcome& o : os) prompt += o.prompt_tokens, completion += o.completion_tokens, cached += o.cached_tokens;
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

json snapvk_json(const Outcome& o) {
  return {{"kv_policy", o.kv_policy},
          {"kv_type", o.kv_type},
          {"kv_bytes", o.kv_bytes},
          {"kv_bytes_full", o.kv_bytes_full},
          {"kv_bytes_allocated", o.kv_bytes_allocated},
          {"kv_ratio", o.kv_bytes ? double(o.kv_bytes_full) / double(o.kv_bytes) : 1.0},
          {"cached_tokens", o.cached_tokens},
          {"pack", o.pack.empty() ? json(nullptr) : json(o.pack)},
          {"pack_tokens", o.pack_tokens},
          {"slot", o.slot},
          {"time_to_first_token_ms", o.ttft_ms}};
}

namespace {

json bytes_of(const std::string& piece) {
  json b = json::array();
  for (unsigned char ch : piece) b.push_back(int(ch));
  return b;
}

// Chat's shape: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}.
json chat_logprobs(const std::vector<TokenLogprob>& lps) {
  json content = json::array();
  for (const TokenLogprob& t : lps) {
    json top = json::array();
    for (const TopLogprob& a : t.top) top.push_back({{"token", a.piece}, {"logprob", a.logprob}, {"bytes", bytes_of(a.piece)}});
    content.push_back(
        {{"token", t.piece}, {"logprob", t.logprob.value_or(0.f)}, {"bytes", bytes_of(t.piece)}, {"top_logprobs", top}});
  }
  return {{"content", content}, {"refusal", nullptr}};
}

// Completion's shape: parallel arrays, the prompt's tokens first with echo (the first one's
// logprob and alternatives null: nothing predicts it); text_offset is each token's byte offset
// in the choice's text.
json completion_logprobs(const Outcome& o) {
  json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(), offsets = json::array();
  size_t offset = 0;
  for (const auto* list : {&o.prompt_logprobs, &o.logprobs})
    for (const TokenLogprob& t : *list) {
      tokens.push_back(t.piece);
      offsets.push_back(offset);
      offset += t.piece.size();
      token_logprobs.push_back(t.logprob ? json(*t.logprob) : json(nullptr));
      if (!t.logprob) {
        top_logprobs.push_back(nullptr);
        continue;
      }
      json top = json::object();
      for (const TopLogprob& a : t.top)
        if (!top.contains(a.piece)) top[a.piece] = a.logprob;  // tokens of one text: the likelier
      top_logprobs.push_back(top);
    }
  return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top_logprobs}, {"text_offset", offsets}};
}

}  // namespace

json completion_response(const GenerationRequest& r, const std::vector<Outcome>& os, const std::string& id,
                         const std::string& model, int64_t created) {
  json choices = json::array(), snapvk = json::array();  // snapvk: one object per choice (one choice: the object)
  for (size_t i = 0; i < os.size(); ++i) {
    const Outcome& o = os[i];
    snapvk.push_back(snapvk_json(o));
    json choice = {{"index", i}, {"finish_reason", o.finish_reason}, {"logprobs", nullptr}};
    if (r.chat) {
      choice["message"] = {{"role", "assistant"}, {"content", o.text}};
      if (r.logprobs >= 0) choice["logprobs"] = chat_logprobs(o.logprobs);
    } else {
      choice["text"] = r.echo ? o.prompt_text + o.text : o.text;
      if (r.logprobs >= 0) choice["logprobs"] = completion_logprobs(o);
    }
    choices.push_back(choice);
  }
  if (snapvk.size() == 1) snapvk = snapvk[0];
  return {{"id", id},
          {"object", r.chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", choices},
          {"usage", usage_json(os)},
          {"snapvk", snapvk}};
}

json stream_chunk(const GenerationRequest& r, const std::string& id, const std::string& model, int64_t created,
                  const std::string& text, const std::optional<std::string>& finish_reason, bool first) {
  json choice = {{"index", r.index}, {"logprobs", nullptr}};
  choice["finish_reason"] = finish_reason ? json(*finish_reason) : json(nullptr);
  if (r.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && !finish_reason)) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  return {{"id", id},
          {"object", r.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})}};
}

}  // namespace snapvk::server
