// The C API (include/snapvk/snapvk.h) over the host/ and runtime/ C++ code. Every entry point
// is noexcept: argument checks and C++ exceptions become a snapvk_status and a per-thread
// message (snapvk_last_error). Handles hold shared pointers, so a session keeps its model and
// a model its device alive whatever order the caller frees them in.
#include "include/snapvk/snapvk.h"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "host/kv/kv_policy.h"
#include "host/model/chat_template.h"
#include "host/model/model.h"
#include "host/pack/pack.h"
#include "host/session/endless.h"
#include "host/session/generate.h"
#include "host/session/sampler.h"
#include "host/session/session.h"
#include "runtime/context.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace {

using namespace snapvk;

// ---- errors ---------------------------------------------------------------------------------

thread_local std::string t_last_error;

// An error of the API layer itself, with its status (an argument check, a caller's buffer
// that is too small, a model path that is not a readable file).
struct ApiError : std::runtime_error {
  ApiError(snapvk_status s, const std::string& msg) : std::runtime_error(msg), status(s) {}
  snapvk_status status;
};

[[noreturn]] void invalid(const std::string& msg) { throw ApiError(SNAPVK_INVALID_ARGUMENT, msg); }

snapvk_status status_of(ErrorKind k) {
  switch (k) {
    case ErrorKind::InvalidArgument: return SNAPVK_INVALID_ARGUMENT;
    case ErrorKind::Io: return SNAPVK_IO;
    case ErrorKind::BadModel: return SNAPVK_BAD_MODEL;
    case ErrorKind::OutOfMemory: return SNAPVK_OUT_OF_MEMORY;
    case ErrorKind::Device: return SNAPVK_DEVICE;
    case ErrorKind::Cancelled: return SNAPVK_CANCELLED;
    case ErrorKind::Internal: return SNAPVK_INTERNAL;
  }
  return SNAPVK_INTERNAL;
}

// The message as this API's users read it: an option error names its field.
std::string api_message(const Error& e) {
  std::string m = e.what();
  // Param names are SessionOptions' field names, which snapvk_session_options shares.
  if (e.param() != Param::None) m += std::string(" (snapvk_session_options.") + param_name(e.param()) + ")";
  return m;
}

snapvk_status fail(const char* fn, snapvk_status s, const char* msg) noexcept {
  try {
    t_last_error = std::string(fn) + ": " + msg;
  } catch (...) {
    t_last_error.clear();  // out of host memory: the status alone must do
  }
  return s;
}

void ensure_logging();

// Runs an entry point's body: its status, or the status of what it threw (a snapvk::Error's
// by its kind) with snapvk_last_error() set.
template <class F>
snapvk_status guarded(const char* fn, F&& f) noexcept {
  t_last_error.clear();
  try {
    ensure_logging();
    return f();
  } catch (const ApiError& e) {
    return fail(fn, e.status, e.what());
  } catch (const Error& e) {
    return fail(fn, status_of(e.kind()), api_message(e).c_str());
  } catch (const std::bad_alloc&) {
    return fail(fn, SNAPVK_OUT_OF_MEMORY, "out of host memory");
  } catch (const std::exception& e) {
    return fail(fn, SNAPVK_INTERNAL, e.what());
  } catch (...) {
    return fail(fn, SNAPVK_INTERNAL, "unknown exception (a callback must not throw)");
  }
}

// ---- versioned structs ------------------------------------------------------------------------

constexpr uint32_t kMaxStructSize = 1u << 16;

// The caller's struct as this library knows it: zero beyond what the caller's version has.
template <class T>
T read_struct(const T* in, const char* what) {
  T out{};
  if (!in) return out;
  if (in->struct_size == 0 || in->struct_size > kMaxStructSize)
    invalid(std::string(what) + ".struct_size is " + std::to_string(in->struct_size) + ": set it to sizeof(" + what +
            ")");
  std::memcpy(&out, in, std::min<size_t>(in->struct_size, sizeof(T)));
  return out;
}

template <class T>
void check_out_struct(const T* out, const char* what) {
  if (!out) invalid(std::string(what) + " is NULL");
  if (out->struct_size == 0 || out->struct_size > kMaxStructSize)
    invalid(std::string(what) + "->struct_size is " + std::to_string(out->struct_size) + ": set it to sizeof(*" + what +
            ")");
}

// Writes as much of `value` as the caller's struct holds, keeping its struct_size.
template <class T>
void write_struct(T* out, T value) {
  value.struct_size = out->struct_size;
  std::memcpy(out, &value, std::min<size_t>(out->struct_size, sizeof(T)));
}

template <size_t N>
void copy_str(char (&dst)[N], const std::string& s) {
  const size_t n = std::min(s.size(), N - 1);
  std::memcpy(dst, s.data(), n);
  dst[n] = 0;
}

// ---- logging ---------------------------------------------------------------------------------

std::mutex g_log_mutex;
snapvk_log_fn g_log_fn = nullptr;
void* g_log_user = nullptr;
std::once_flag g_log_once;

int32_t to_api_level(spdlog::level::level_enum l) {
  switch (l) {
    case spdlog::level::trace: return SNAPVK_LOG_TRACE;
    case spdlog::level::debug: return SNAPVK_LOG_DEBUG;
    case spdlog::level::info: return SNAPVK_LOG_INFO;
    case spdlog::level::warn: return SNAPVK_LOG_WARN;
    default: return SNAPVK_LOG_ERROR;
  }
}

// stderr, or the application's callback.
class ApiSink final : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    std::string line(buf.data(), buf.size());
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    snapvk_log_fn fn;
    void* user;
    {
      std::lock_guard<std::mutex> lock(g_log_mutex);
      fn = g_log_fn, user = g_log_user;
    }
    if (fn)
      fn(to_api_level(msg.level), line.c_str(), user);
    else
      std::fprintf(stderr, "%s\n", line.c_str());
  }
  void flush_() override { std::fflush(stderr); }
};

// The runtime logs through snapvk's own logger (runtime/log.h), never spdlog's default: point
// it at stderr or the application's callback, at the level it has (warn, or $SNAPVK_LOG_LEVEL).
// An application's own spdlog loggers, its default one included, are left alone.
void ensure_logging() {
  std::call_once(g_log_once, [] {
    auto logger = std::make_shared<spdlog::logger>("snapvk", std::make_shared<ApiSink>());
    logger->set_pattern("[snapvk %l] %v");
    logger->set_level(snapvk::log().level());
    snapvk::set_logger(std::move(logger));
  });
}

// ---- handles ---------------------------------------------------------------------------------

constexpr uint32_t kDeviceMagic = 0x56444b53, kModelMagic = 0x4d444b53, kSessionMagic = 0x53534b53;

struct DeviceImpl {
  explicit DeviceImpl(const ContextOptions& o) : ctx(o), kernels(ctx) {}
  Context ctx;
  Kernels kernels;
};

struct ModelImpl {
  ModelImpl(std::shared_ptr<DeviceImpl> d, const std::string& path, const std::string& chat_template)
      : device(std::move(d)), model(device->kernels, path) {
    // A template the GGUF states but snapvk does not render fails only the chat calls.
    try {
      chat = ChatTemplate::for_model(model.gguf(), model.tokenizer(), chat_template);
      stop_tokens = chat->stop_tokens(model.tokenizer());
    } catch (const Error& e) {
      if (!chat_template.empty()) throw ApiError(SNAPVK_INVALID_ARGUMENT, e.what());
      chat_error = e.what();
    }
  }
  const ChatTemplate& chat_template() const {
    if (!chat) invalid(chat_error);
    return *chat;
  }
  std::shared_ptr<DeviceImpl> device;  // destroyed after the model
  Model model;
  std::optional<ChatTemplate> chat;
  std::string chat_error;            // why there is no chat template
  std::vector<int32_t> stop_tokens;  // the template's end of turn, eos, eot
};

}  // namespace

struct snapvk_device {
  uint32_t magic = kDeviceMagic;
  std::shared_ptr<DeviceImpl> impl;
};

struct snapvk_model {
  uint32_t magic = kModelMagic;
  std::shared_ptr<ModelImpl> impl;
};

struct snapvk_session {
  enum Phase : int { Idle, Busy, InTokenCallback };
  uint32_t magic = kSessionMagic;
  std::shared_ptr<ModelImpl> model;      // destroyed after the session
  std::unique_ptr<EndlessChat> endless;  // kv_endless: owns the session
  std::unique_ptr<Session> plain;        // otherwise
  Session* session = nullptr;            // the conversation's: endless's or plain
  std::vector<float> logits;  // after the last token held (copied: a cancelled prefill may overwrite the session's)
  bool have_logits = false;
  std::vector<int32_t> history;  // every token held, for the repetition penalty
  ChatHistory chat;              // the conversation held, when prefilled as chat messages
  std::atomic<bool> cancel{false};
  std::atomic<int> phase{Idle};
  std::atomic<std::thread::id> owner{};
  snapvk_progress_fn on_progress = nullptr;
  void* progress_user = nullptr;
};

namespace {

DeviceImpl& device_of(const snapvk_device* d, const char* what = "device") {
  if (!d) invalid(std::string(what) + " is NULL");
  if (d->magic != kDeviceMagic || !d->impl) invalid(std::string(what) + " is not a live snapvk_device handle");
  return *d->impl;
}

ModelImpl& model_of(const snapvk_model* m) {
  if (!m) invalid("model is NULL");
  if (m->magic != kModelMagic || !m->impl) invalid("model is not a live snapvk_model handle");
  return *m->impl;
}

void check_session(const snapvk_session* s) {
  if (!s) invalid("session is NULL");
  if (s->magic != kSessionMagic || !s->session) invalid("session is not a live snapvk_session handle");
}

// One thread at a time per session; read-only calls are also allowed from that thread's token
// callback. Held for the length of a call.
class SessionUse {
 public:
  enum Kind { Mutating, ReadOnly };
  SessionUse(snapvk_session* s, Kind kind) : s_(s) {
    check_session(s);
    int expected = snapvk_session::Idle;
    if (s->phase.compare_exchange_strong(expected, snapvk_session::Busy)) {
      s->owner.store(std::this_thread::get_id());
      owned_ = true;
      return;
    }
    const bool same_thread = s->owner.load() == std::this_thread::get_id();
    if (same_thread && kind == ReadOnly && expected == snapvk_session::InTokenCallback) return;
    if (same_thread)
      invalid(
          "the session is running a call on this thread: only snapvk_session_get_kv_stats, "
          "snapvk_session_get_logits and snapvk_session_cancel may be called from its token "
          "callback, only snapvk_session_cancel from its progress callback");
    invalid("the session is in use by another thread (a session is used by one thread at a time)");
  }
  ~SessionUse() {
    if (!owned_) return;
    s_->owner.store(std::thread::id());
    s_->phase.store(snapvk_session::Idle);
  }
  SessionUse(const SessionUse&) = delete;
  SessionUse& operator=(const SessionUse&) = delete;

 private:
  snapvk_session* s_;
  bool owned_ = false;
};

// An enum's C value: its index in the option's names(), which follow the C enums' order.
template <class E>
int32_t to_c(E v) {
  const auto list = names(v);
  for (size_t i = 0; i < list.size(); ++i)
    if (list[i].value == v) return int32_t(i);
  return -1;
}

// One option of snapvk_session_options read into its SessionOptions field. Zero is the
// default everywhere; a signed count also takes -1 for none (0); an enum is its C value.
// `c_type` names the C enum in errors ("snapvk_kv_gqa").
template <class E>
  requires std::is_enum_v<E>
void from_c(const OptionInfo& info, int32_t c, E& field) {
  const auto list = names(field);
  if (c < 0 || size_t(c) >= list.size()) {
    std::string choices;
    for (size_t i = 0; i < list.size(); ++i) choices += (i ? ", " : "") + std::to_string(i) + " " + list[i].name;
    invalid(std::string(info.key) + " " + std::to_string(c) + " is not a snapvk_" + info.key + " (" + choices + ")");
  }
  field = list[size_t(c)].value;
}
void from_c(const OptionInfo&, uint32_t c, uint32_t& field) {
  if (c) field = c;
}
void from_c(const OptionInfo& info, int32_t c, uint32_t& field) {
  if (c < -1)
    invalid(std::string(info.key) + " " + std::to_string(c) + " must be -1 (none), 0 (the default) or positive");
  if (c) field = c < 0 ? 0 : uint32_t(c);
}
void from_c(const OptionInfo& info, float c, float& field) {
  if (std::isnan(c) || c < info.lo || c > info.hi)
    invalid(std::string(info.key) + " must be in [" + std::to_string(int(info.lo)) + ", " + std::to_string(int(info.hi)) +
            "], 0 for the default");
  if (c != 0.0f) field = c;
}

int32_t to_stop_reason(StopReason r) {
  switch (r) {
    case StopReason::MaxTokens: return SNAPVK_STOP_MAX_TOKENS;
    case StopReason::EndOfGeneration: return SNAPVK_STOP_END_OF_GENERATION;
    case StopReason::Callback: return SNAPVK_STOP_CALLBACK;
    case StopReason::ContextFull: return SNAPVK_STOP_CONTEXT_FULL;
    case StopReason::Cancelled: return SNAPVK_STOP_CANCELLED;
  }
  return SNAPVK_STOP_MAX_TOKENS;
}

// Every option of the table read from its field of the same name; kv_policy_name, when set,
// names the policy instead of kv_policy.
SessionOptions to_session_options(const snapvk_session_options& opts) {
  SessionOptions so;
  // kv_type sets both caches' type, kv_type_v (when set) V's alone: the table's two rows read them
  struct : snapvk_session_options {
    int32_t kv_type_k;
  } o{opts, opts.kv_type};
  if (!o.kv_type_v_set) o.kv_type_v = o.kv_type;
  if (o.kv_type_v_set > 1) invalid("kv_type_v_set must be 0 or 1");
#define SNAPVK_FROM_C(key, member, ...) from_c(SNAPVK_OPTION_INFO(key, member, __VA_ARGS__), o.key, so.member);
  SNAPVK_SESSION_OPTIONS(SNAPVK_FROM_C)
#undef SNAPVK_FROM_C
  if (o.kv_policy_name) {
    const auto p = parse_kv_policy(o.kv_policy_name);
    if (!p)
      invalid(std::string("kv_policy_name '") + o.kv_policy_name + "' is not a KV policy (" +
              names_of(names(KvPolicy{})) + ")");
    so.kv.policy = *p;
  }
  if (o.kv_endless > 1) invalid("kv_endless must be 0 or 1");
  so.kv.validate();
  return so;
}

SamplerParams to_sampler_params(const snapvk_sampling_params& p) {
  if (std::isnan(p.temperature) || std::isnan(p.top_p) || std::isnan(p.min_p) || std::isnan(p.repeat_penalty))
    invalid("sampling parameters must be numbers (not NaN)");
  if (p.top_p < 0.0f) invalid("top_p must be >= 0 (0 or >= 1: off)");
  if (p.repeat_penalty < 0.0f) invalid("repeat_penalty must be >= 0 (0 or 1: off)");
  if (p.repeat_last_n < 0) invalid("repeat_last_n must be >= 0 (0: 64)");
  SamplerParams sp;
  sp.temp = p.temperature > 0.0f ? p.temperature : 0.0f;
  sp.top_k = p.top_k;
  sp.top_p = p.top_p > 0.0f && p.top_p < 1.0f ? p.top_p : 1.0f;
  sp.min_p = p.min_p > 0.0f ? p.min_p : 0.0f;
  sp.repeat_penalty = p.repeat_penalty > 0.0f ? p.repeat_penalty : 1.0f;
  sp.repeat_last_n = p.repeat_last_n ? p.repeat_last_n : 64;
  sp.seed = p.seed == SNAPVK_SEED_RANDOM ? (uint64_t(std::random_device{}()) << 32 | std::random_device{}()) : p.seed;
  return sp;
}

// Takes a cancel request, if any, and stops the call.
void take_cancel(snapvk_session* s) {
  if (s->cancel.exchange(false)) throw Cancelled();
}

std::vector<uint8_t> pack_bytes(snapvk_session* s) {
  if (s->session->n_past() == 0) invalid("the session is empty: nothing to save");
  return write_pack(pack_of(*s->session, s->history));
}

// Everything is checked before the session changes; a load that fails later (out of memory)
// leaves it empty.
void load_pack_bytes(snapvk_session* s, std::span<const uint8_t> bytes, const std::string& name) {
  const Pack p = read_pack(bytes, name);
  try {
    load_pack(*s->session, p, name);
  } catch (...) {
    if (s->session->n_past() == 0) s->history.clear(), s->chat.clear(), s->have_logits = false;
    throw;
  }
  s->history = p.tokens;
  s->chat.clear();  // a conversation may follow the document
  s->logits = p.logits;
  s->have_logits = !p.logits.empty();
  s->cancel.store(false);
}

void prefill(snapvk_session* s, std::span<const int32_t> tokens) {
  if (tokens.empty()) invalid("nothing to prefill (no tokens)");
  Session& session = *s->session;
  const uint32_t before = session.n_past();
  try {
    take_cancel(s);
    std::span<const float> logits = session.prefill(tokens);
    s->logits.assign(logits.begin(), logits.end());
  } catch (const Cancelled&) {
    s->cancel.store(false);  // the session is as before the call
    throw;
  } catch (const Error&) {
    s->cancel.store(false);
    // Session::prefill puts itself back as it was on any failure, and drops a compressed first
    // prompt whole (it resets itself): the handle forgets what it held about that prompt too.
    if (before == 0 && session.options().kv.compresses()) {
      s->history.clear();
      s->chat.clear();
      s->have_logits = false;
    }
    throw;
  }
  s->cancel.store(false);  // a request that came too late for this call is dropped with it
  s->have_logits = true;
  s->history.insert(s->history.end(), tokens.begin(), tokens.end());
}

// The caller's messages: an array whose stride is the first element's struct_size.
std::vector<ChatMessage> read_messages(const snapvk_chat_message* messages, size_t n) {
  if (!messages && n) invalid("messages is NULL but n_messages is " + std::to_string(n));
  std::vector<ChatMessage> out;
  if (!n) return out;
  const uint32_t stride = messages[0].struct_size;
  constexpr size_t kV1 = offsetof(snapvk_chat_message, content) + sizeof(const char*);
  if (stride < kV1 || stride > kMaxStructSize)
    invalid("messages[0].struct_size is " + std::to_string(stride) + ": set it to sizeof(snapvk_chat_message)");
  for (size_t i = 0; i < n; ++i) {
    snapvk_chat_message m{};
    std::memcpy(&m, reinterpret_cast<const char*>(messages) + i * stride, std::min<size_t>(stride, sizeof m));
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (m.struct_size != stride)
      invalid(at + ".struct_size is " + std::to_string(m.struct_size) + ", messages[0]'s is " + std::to_string(stride) +
              ": set every element's to sizeof(snapvk_chat_message)");
    if (!m.role) invalid(at + ".role is NULL");
    if (!m.content) invalid(at + ".content is NULL");
    out.push_back({m.role, m.content});
  }
  return out;
}

// Writes `s` NUL-terminated to the caller's buffer (or asks for its length), as snapvk_detokenize.
snapvk_status write_text(const std::string& s, char* text, size_t capacity, size_t* length) {
  *length = s.size();
  if (!text) return SNAPVK_OK;
  if (capacity < s.size() + 1)
    throw ApiError(SNAPVK_BUFFER_TOO_SMALL, "the text needs " + std::to_string(s.size() + 1) +
                                                " bytes with its NUL, the buffer has " + std::to_string(capacity));
  std::memcpy(text, s.c_str(), s.size() + 1);
  return SNAPVK_OK;
}

}  // namespace

// ---- status, version, logging -------------------------------------------------------------------

extern "C" {

SNAPVK_API const char* snapvk_last_error(void) { return t_last_error.c_str(); }

SNAPVK_API const char* snapvk_status_name(snapvk_status status) {
  switch (status) {
    case SNAPVK_OK: return "SNAPVK_OK";
    case SNAPVK_INVALID_ARGUMENT: return "SNAPVK_INVALID_ARGUMENT";
    case SNAPVK_IO: return "SNAPVK_IO";
    case SNAPVK_BAD_MODEL: return "SNAPVK_BAD_MODEL";
    case SNAPVK_OUT_OF_MEMORY: return "SNAPVK_OUT_OF_MEMORY";
    case SNAPVK_DEVICE: return "SNAPVK_DEVICE";
    case SNAPVK_CANCELLED: return "SNAPVK_CANCELLED";
    case SNAPVK_INTERNAL: return "SNAPVK_INTERNAL";
    case SNAPVK_BUFFER_TOO_SMALL: return "SNAPVK_BUFFER_TOO_SMALL";
    case SNAPVK_STATUS_MAX_ENUM: break;
  }
  return "SNAPVK_UNKNOWN";
}

SNAPVK_API uint32_t snapvk_abi_version(void) { return SNAPVK_ABI_VERSION; }

SNAPVK_API const char* snapvk_version_string(void) { return SNAPVK_VERSION; }

SNAPVK_API snapvk_status snapvk_set_log_level(int32_t level) {
  return guarded(__func__, [&] {
    spdlog::level::level_enum l;
    switch (level) {
      case SNAPVK_LOG_TRACE: l = spdlog::level::trace; break;
      case SNAPVK_LOG_DEBUG: l = spdlog::level::debug; break;
      case SNAPVK_LOG_INFO: l = spdlog::level::info; break;
      case SNAPVK_LOG_WARN: l = spdlog::level::warn; break;
      case SNAPVK_LOG_ERROR: l = spdlog::level::err; break;
      case SNAPVK_LOG_OFF: l = spdlog::level::off; break;
      default: invalid("level " + std::to_string(level) + " is not a snapvk_log_level");
    }
    snapvk::log().set_level(l);
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_set_log_callback(snapvk_log_fn fn, void* user_data) {
  return guarded(__func__, [&] {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    g_log_fn = fn;
    g_log_user = fn ? user_data : nullptr;
    return SNAPVK_OK;
  });
}

// ---- devices ---------------------------------------------------------------------------------

static void fill_device_info(const DeviceInfo& d, snapvk_device_info* out) {
  snapvk_device_info info{};
  info.index = d.index;
  info.type = int32_t(d.type);
  info.api_version = d.api_version;
  info.device_local_bytes = d.device_local_bytes();
  info.subgroup_size = d.subgroup_size;
  info.fp16 = d.fp16;
  info.int8 = d.int8;
  info.unified_memory = d.unified_memory;
  copy_str(info.name, d.name);
  copy_str(info.driver, d.driver);
  write_struct(out, info);
}

SNAPVK_API snapvk_status snapvk_device_count(uint32_t* count) {
  return guarded(__func__, [&] {
    if (!count) invalid("count is NULL");
    *count = 0;
    *count = uint32_t(Context::list_devices().size());
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_device_describe(uint32_t index, snapvk_device_info* info) {
  return guarded(__func__, [&] {
    check_out_struct(info, "info");
    const auto devices = Context::list_devices();
    if (index >= devices.size())
      invalid("device index " + std::to_string(index) + " is out of range: " + std::to_string(devices.size()) +
              " device(s)");
    fill_device_info(devices[index], info);
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_device_create(const snapvk_device_options* options, snapvk_device** out) {
  return guarded(__func__, [&] {
    if (!out) invalid("out is NULL");
    *out = nullptr;
    const snapvk_device_options o = read_struct(options, "snapvk_device_options");
    ContextOptions co;
    co.validation = o.validation != 0;
    if (o.device) co.device = o.device;
    co.memory_budget = o.max_device_memory;
    auto handle = std::make_unique<snapvk_device>();
    handle->impl = std::make_shared<DeviceImpl>(co);
    *out = handle.release();
    return SNAPVK_OK;
  });
}

SNAPVK_API void snapvk_device_free(snapvk_device* device) {
  if (!device || device->magic != kDeviceMagic) return;
  device->magic = 0;
  try {
    delete device;  // the device itself goes with its last model or session
  } catch (...) {}
}

SNAPVK_API snapvk_status snapvk_device_get_info(const snapvk_device* device, snapvk_device_info* info) {
  return guarded(__func__, [&] {
    DeviceImpl& d = device_of(device);
    check_out_struct(info, "info");
    fill_device_info(d.ctx.info(), info);
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_device_get_memory(const snapvk_device* device, snapvk_device_memory* memory) {
  return guarded(__func__, [&] {
    DeviceImpl& d = device_of(device);
    check_out_struct(memory, "memory");
    snapvk_device_memory m{};
    m.in_use_bytes = d.ctx.memory().current();
    m.peak_bytes = d.ctx.memory().peak();
    m.budget_bytes = d.ctx.memory().budget();
    m.validation_errors = d.ctx.validation_errors();
    write_struct(memory, m);
    return SNAPVK_OK;
  });
}

// ---- models ----------------------------------------------------------------------------------

SNAPVK_API snapvk_status snapvk_model_load(snapvk_device* device, const char* path, const snapvk_model_options* options,
                                           snapvk_model** out) {
  return guarded(__func__, [&]() -> snapvk_status {
    if (!out) invalid("out is NULL");
    *out = nullptr;
    DeviceImpl& d = device_of(device);
    (void)d;
    if (!path) invalid("path is NULL");
    if (!*path) invalid("path is empty");
    const snapvk_model_options o = read_struct(options, "snapvk_model_options");
    if (o.flags) invalid("snapvk_model_options.flags must be 0");
    // Problems with the file itself are IO errors; what is in it, BAD_MODEL.
    std::error_code ec;
    const auto st = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::exists(st)) throw ApiError(SNAPVK_IO, std::string(path) + ": no such file");
    if (std::filesystem::is_directory(st)) throw ApiError(SNAPVK_IO, std::string(path) + ": is a directory");
    if (std::FILE* f = std::fopen(path, "rb"))
      std::fclose(f);
    else
      throw ApiError(SNAPVK_IO, std::string(path) + ": cannot open: " + std::strerror(errno));
    auto handle = std::make_unique<snapvk_model>();
    handle->impl = std::make_shared<ModelImpl>(device->impl, path, o.chat_template ? o.chat_template : "");
    *out = handle.release();
    return SNAPVK_OK;
  });
}

SNAPVK_API void snapvk_model_free(snapvk_model* model) {
  if (!model || model->magic != kModelMagic) return;
  model->magic = 0;
  try {
    delete model;
  } catch (...) {}
}

SNAPVK_API snapvk_status snapvk_model_get_info(const snapvk_model* model, snapvk_model_info* info) {
  return guarded(__func__, [&] {
    const Model& m = model_of(model).model;
    check_out_struct(info, "info");
    const ModelConfig& c = m.config();
    snapvk_model_info i{};
    i.n_vocab = c.n_vocab;
    i.n_ctx_train = c.n_ctx_train;
    i.n_embd = c.n_embd;
    i.n_layer = c.n_layer;
    i.n_head = c.n_head;
    i.n_head_kv = c.n_head_kv;
    i.head_dim = c.head_dim;
    i.n_ff = c.n_ff;
    i.bos = m.tokenizer().bos();
    i.eos = m.tokenizer().eos();
    i.weight_bytes = m.weights().bytes;
    copy_str(i.arch, c.arch_name);
    copy_str(i.name, c.name);
    write_struct(info, i);
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_tokenize(const snapvk_model* model, const char* text, uint32_t flags, int32_t* tokens,
                                         size_t capacity, size_t* n_tokens) {
  return guarded(__func__, [&] {
    const Model& m = model_of(model).model;
    if (!text) invalid("text is NULL");
    if (!n_tokens) invalid("n_tokens is NULL");
    if (!tokens && capacity) invalid("tokens is NULL but capacity is " + std::to_string(capacity));
    if (flags & ~(SNAPVK_TOKENIZE_ADD_SPECIAL | SNAPVK_TOKENIZE_PARSE_SPECIAL))
      invalid("unknown flags " + std::to_string(flags));
    const auto ids =
        m.tokenizer().encode(text, flags & SNAPVK_TOKENIZE_ADD_SPECIAL, flags & SNAPVK_TOKENIZE_PARSE_SPECIAL);
    *n_tokens = ids.size();
    if (!tokens) return SNAPVK_OK;
    if (capacity < ids.size())
      throw ApiError(SNAPVK_BUFFER_TOO_SMALL,
                     std::to_string(ids.size()) + " tokens do not fit a buffer of " + std::to_string(capacity));
    std::copy(ids.begin(), ids.end(), tokens);
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_detokenize(const snapvk_model* model, const int32_t* tokens, size_t n_tokens,
                                           uint32_t flags, char* text, size_t capacity, size_t* length) {
  return guarded(__func__, [&] {
    const Model& m = model_of(model).model;
    if (!tokens && n_tokens) invalid("tokens is NULL but n_tokens is " + std::to_string(n_tokens));
    if (!length) invalid("length is NULL");
    if (!text && capacity) invalid("text is NULL but capacity is " + std::to_string(capacity));
    if (flags & ~(SNAPVK_DETOKENIZE_SPECIAL | SNAPVK_DETOKENIZE_STRIP_SPACE))
      invalid("unknown flags " + std::to_string(flags));
    const Tokenizer& tok = m.tokenizer();
    std::string s;
    for (size_t i = 0; i < n_tokens; ++i) s += tok.token_to_piece(tokens[i], flags & SNAPVK_DETOKENIZE_SPECIAL);
    if ((flags & SNAPVK_DETOKENIZE_STRIP_SPACE) && tok.vocab().add_space_prefix && !s.empty() && s[0] == ' ')
      s.erase(0, 1);
    return write_text(s, text, capacity, length);
  });
}

// ---- chat templates ----------------------------------------------------------------------------

SNAPVK_API snapvk_status snapvk_model_get_chat_template(const snapvk_model* model, snapvk_chat_template_info* info) {
  return guarded(__func__, [&] {
    const ModelImpl& m = model_of(model);
    check_out_struct(info, "info");
    const ChatTemplate& t = m.chat_template();
    snapvk_chat_template_info i{};
    i.has_default_system = !t.default_system().empty();
    copy_str(i.name, t.name());
    copy_str(i.source, t.source());
    write_struct(info, i);
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_chat_apply_template(const snapvk_model* model, const snapvk_chat_message* messages,
                                                    size_t n_messages, int add_assistant, char* text, size_t capacity,
                                                    size_t* length) {
  return guarded(__func__, [&] {
    const ModelImpl& m = model_of(model);
    if (!length) invalid("length is NULL");
    if (!text && capacity) invalid("text is NULL but capacity is " + std::to_string(capacity));
    const std::vector<ChatMessage> msgs = read_messages(messages, n_messages);
    return write_text(m.chat_template().render(msgs, add_assistant != 0), text, capacity, length);
  });
}

// ---- sessions --------------------------------------------------------------------------------

SNAPVK_API snapvk_status snapvk_session_create(snapvk_model* model, const snapvk_session_options* options,
                                               snapvk_session** out) {
  return guarded(__func__, [&] {
    if (!out) invalid("out is NULL");
    *out = nullptr;
    ModelImpl& m = model_of(model);
    const snapvk_session_options o = read_struct(options, "snapvk_session_options");
    SessionOptions so = to_session_options(o);
    auto handle = std::make_unique<snapvk_session>();
    snapvk_session* s = handle.get();
    s->model = model->impl;
    s->on_progress = o.on_progress;
    s->progress_user = o.progress_user_data;
    so.on_progress = [s](uint64_t done, uint64_t total) {
      if (s->cancel.load()) return false;
      return !(s->on_progress && s->on_progress(done, total, s->progress_user) != 0);
    };
    if (o.kv_endless)
      s->endless = std::make_unique<EndlessChat>(m.model, so), s->session = &s->endless->session();
    else
      s->plain = std::make_unique<Session>(m.model, so), s->session = s->plain.get();
    s->logits.reserve(m.model.config().n_vocab);
    *out = handle.release();
    return SNAPVK_OK;
  });
}

SNAPVK_API void snapvk_session_free(snapvk_session* session) {
  if (!session || session->magic != kSessionMagic) return;
  session->magic = 0;
  try {
    delete session;
  } catch (...) {}
}

SNAPVK_API snapvk_status snapvk_session_prefill_text(snapvk_session* session, const char* text) {
  return guarded(__func__, [&] {
    SessionUse use(session, SessionUse::Mutating);
    if (!text) invalid("text is NULL");
    const Tokenizer& tok = session->model->model.tokenizer();
    const auto tokens = tok.encode(text, session->session->n_past() == 0);
    if (tokens.empty()) invalid("the text gives no tokens");
    prefill(session, tokens);
    session->chat.invalidate();
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_session_prefill_chat(snapvk_session* session, const snapvk_chat_message* messages,
                                                     size_t n_messages, int add_assistant) {
  return guarded(__func__, [&] {
    SessionUse use(session, SessionUse::Mutating);
    const ModelImpl& m = *session->model;
    const std::vector<ChatMessage> msgs = read_messages(messages, n_messages);
    if (msgs.empty()) invalid("n_messages is 0");
    ChatHistory next = session->chat;  // kept only when the prefill succeeds
    std::string text;
    try {
      text = next.next(m.chat_template(), msgs, add_assistant != 0);
    } catch (const Error& e) {
      invalid(e.what());
    }
    if (text.empty()) invalid("nothing new: the messages are those the session holds");
    const auto tokens = m.model.tokenizer().encode(text, session->session->n_past() == 0, true);
    prefill(session, tokens);
    session->chat = std::move(next);
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_session_prefill_tokens(snapvk_session* session, const int32_t* tokens,
                                                       size_t n_tokens) {
  return guarded(__func__, [&] {
    SessionUse use(session, SessionUse::Mutating);
    if (!tokens) invalid("tokens is NULL");
    if (n_tokens == 0) invalid("n_tokens is 0");
    prefill(session, std::span<const int32_t>(tokens, n_tokens));
    session->chat.invalidate();
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_session_generate(snapvk_session* session, const snapvk_sampling_params* params,
                                                 uint32_t max_tokens, snapvk_token_fn on_token, void* user_data,
                                                 snapvk_generate_result* result) {
  return guarded(__func__, [&] {
    SessionUse use(session, SessionUse::Mutating);
    if (result) check_out_struct(result, "result");
    const snapvk_sampling_params p = read_struct(params, "snapvk_sampling_params");
    const SamplerParams sp = to_sampler_params(p);
    snapvk_session* s = session;
    if (!s->have_logits) invalid("the session is empty: prefill a prompt first");
    Session& sess = *s->session;
    Sampler sampler(sp);
    const size_t look_back = std::min<size_t>(s->history.size(), size_t(sp.repeat_last_n));
    for (size_t i = s->history.size() - look_back; i < s->history.size(); ++i) sampler.accept(s->history[i]);

    GenerateOptions go;
    go.max_tokens = max_tokens;
    go.stop_tokens = s->model->stop_tokens;
    go.cancel = &s->cancel;
    if (on_token)
      go.on_token = [&](int32_t token, std::string_view piece) {
        const std::string text(piece);  // NUL-terminated for C
        s->phase.store(snapvk_session::InTokenCallback);
        const int stop = on_token(token, text.c_str(), user_data);
        s->phase.store(snapvk_session::Busy);
        return stop == 0;
      };
    // Every token the caller saw goes into the cache, so the conversation can go on after it.
    go.on_decoded = [s](int32_t token, std::span<const float> logits) {
      s->logits.assign(logits.begin(), logits.end());
      s->history.push_back(token);
    };
    GenerateResult g;
    auto result_of = [&] {
      snapvk_generate_result r{};
      r.n_tokens = g.decoded;
      r.last_token = g.last_token;
      r.decode_ms = g.wall_ms;
      r.stop_reason = to_stop_reason(g.stop);
      return r;
    };
    // What entered the cache belongs to the conversation (a chat's answer).
    auto record_answer = [&] {
      if (!s->chat.active()) return;
      std::string text;
      const Tokenizer& tok = sess.model().tokenizer();
      for (uint32_t i = 0; i < g.decoded && i < g.tokens.size(); ++i) text += tok.token_to_piece(g.tokens[i]);
      s->chat.generated(text);
    };
    try {
      generate(sess, sampler, s->logits, go, g);
    } catch (...) {
      s->phase.store(snapvk_session::Busy);
      s->cancel.store(false);
      record_answer();
      throw;
    }
    s->cancel.store(false);
    record_answer();
    if (s->endless) s->endless->end_turn();  // an endless chat over its budget compacts at the end of each answer
    if (result) write_struct(result, result_of());
    if (g.stop == StopReason::Cancelled) throw Cancelled();
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_session_get_logits(snapvk_session* session, const float** logits, size_t* n_vocab) {
  return guarded(__func__, [&] {
    SessionUse use(session, SessionUse::ReadOnly);
    if (!logits) invalid("logits is NULL");
    if (!n_vocab) invalid("n_vocab is NULL");
    if (!session->have_logits) invalid("the session is empty: prefill a prompt first");
    *logits = session->logits.data();
    *n_vocab = session->logits.size();
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_session_get_kv_stats(snapvk_session* session, snapvk_kv_stats* stats) {
  return guarded(__func__, [&] {
    SessionUse use(session, SessionUse::ReadOnly);
    check_out_struct(stats, "stats");
    const Session& sess = *session->session;
    const KvStats k = sess.kv_stats();
    const Context& ctx = session->model->device->ctx;
    snapvk_kv_stats o{};
    o.n_past = sess.n_past();
    o.n_ctx = sess.n_ctx();
    o.prompt_len = sess.cache().compacted_len();
    o.kv_policy = to_c(sess.options().kv.policy);
    o.kv_type = to_c(sess.options().kv_type_k);
    o.kv_type_v = to_c(sess.options().kv_type_v);
    o.full_bytes = k.full_bytes;
    o.retained_bytes = k.retained_bytes;
    o.allocated_bytes = k.allocated_bytes;
    o.ratio = k.ratio();
    o.device_bytes = ctx.memory().current();
    o.peak_device_bytes = ctx.memory().peak();
    o.prefill_ms = k.prefill_ms;
    o.score_ms = k.score_ms;
    o.pool_ms = k.pool_ms;
    o.select_ms = k.select_ms;
    o.gather_ms = k.gather_ms;
    write_struct(stats, o);
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_session_reset(snapvk_session* session) {
  return guarded(__func__, [&] {
    SessionUse use(session, SessionUse::Mutating);
    session->session->reset();
    session->history.clear();
    session->chat.clear();
    session->have_logits = false;
    session->cancel.store(false);
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_session_save(snapvk_session* session, const char* path) {
  return guarded(__func__, [&] {
    SessionUse use(session, SessionUse::Mutating);
    if (!path) invalid("path is NULL");
    write_pack_file(path, pack_bytes(session));
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_session_save_to_memory(snapvk_session* session, void* buffer, size_t capacity,
                                                       size_t* size) {
  return guarded(__func__, [&] {
    SessionUse use(session, SessionUse::Mutating);
    if (!size) invalid("size is NULL");
    if (!buffer && capacity) invalid("buffer is NULL with a non-zero capacity");
    const std::vector<uint8_t> bytes = pack_bytes(session);
    *size = bytes.size();
    if (capacity == 0 && !buffer) return SNAPVK_OK;
    if (capacity < bytes.size())
      throw ApiError(SNAPVK_BUFFER_TOO_SMALL, "the pack needs " + std::to_string(bytes.size()) +
                                                  " bytes, the buffer holds " + std::to_string(capacity));
    std::memcpy(buffer, bytes.data(), bytes.size());
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_session_load(snapvk_session* session, const char* path) {
  return guarded(__func__, [&] {
    SessionUse use(session, SessionUse::Mutating);
    if (!path) invalid("path is NULL");
    load_pack_bytes(session, read_pack_file(path), path);
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_session_load_from_memory(snapvk_session* session, const void* data, size_t size) {
  return guarded(__func__, [&] {
    SessionUse use(session, SessionUse::Mutating);
    if (!data) invalid("data is NULL");
    load_pack_bytes(session, std::span<const uint8_t>(static_cast<const uint8_t*>(data), size), "memory");
    return SNAPVK_OK;
  });
}

SNAPVK_API snapvk_status snapvk_session_cancel(snapvk_session* session) {
  return guarded(__func__, [&] {
    check_session(session);
    session->cancel.store(true);
    return SNAPVK_OK;
  });
}

}  // extern "C"
