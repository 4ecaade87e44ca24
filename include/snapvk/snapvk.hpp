// snapvk.hpp: header-only C++17 wrappers over the C API in snapvk.h. RAII handles
// (Device, Model, Session: movable, not copyable), exceptions instead of status codes
// (snapvk::Error carries the snapvk_status and the message), std::string / std::vector
// conveniences and lambdas for the token and progress callbacks.
//
//   snapvk::Device device;
//   snapvk::Model model(device, "model.gguf");
//   snapvk::SessionOptions so;
//   so.kv_policy = SNAPVK_KV_POLICY_SNAPKV, so.kv_budget = 64, so.kv_window = 8;
//   snapvk::Session chat(model, so);
//   chat.prefill("Once upon a time");
//   chat.generate(64, [](int32_t, std::string_view piece) { std::cout << piece << std::flush; });
//   std::cout << chat.kv_stats().ratio << "x\n";
//
// Thread safety and lifetimes are those of the C API: a Model may serve Sessions on several
// threads at once; a Session is used by one thread at a time, except cancel(). The classes live
// in an inline namespace (snapvk::v1) so that their symbols never meet the library's own.
#ifndef SNAPVK_SNAPVK_HPP
#define SNAPVK_SNAPVK_HPP

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "snapvk.h"

namespace snapvk {
inline namespace v1 {

// A failed snapvk call: status() says which kind, what() the message of snapvk_last_error().
class Error : public std::runtime_error {
 public:
  Error(snapvk_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  snapvk_status status() const noexcept { return status_; }
  bool cancelled() const noexcept { return status_ == SNAPVK_CANCELLED; }

 private:
  snapvk_status status_;
};

// Throws snapvk::Error for anything but SNAPVK_OK.
inline void check(snapvk_status status) {
  if (status != SNAPVK_OK) {
    const char* msg = snapvk_last_error();
    throw Error(status, msg && *msg ? msg : snapvk_status_name(status));
  }
}

// The C structs with struct_size set and every other field at its default (zero).
template <class T>
struct Versioned : T {
  Versioned() : T{} { this->struct_size = sizeof(T); }
};
using DeviceOptions = Versioned<snapvk_device_options>;
using ModelOptions = Versioned<snapvk_model_options>;
using SessionOptions = Versioned<snapvk_session_options>;
using SamplingParams = Versioned<snapvk_sampling_params>;  // greedy
using DeviceInfo = Versioned<snapvk_device_info>;
using DeviceMemory = Versioned<snapvk_device_memory>;
using ModelInfo = Versioned<snapvk_model_info>;
using KvStats = Versioned<snapvk_kv_stats>;
using GenerateResult = Versioned<snapvk_generate_result>;
using ChatTemplateInfo = Versioned<snapvk_chat_template_info>;

// One message of a conversation (Model::apply_chat_template, Session::prefill_chat).
struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

inline std::string version() { return snapvk_version_string(); }

namespace detail {
struct DeviceDeleter {
  void operator()(snapvk_device* d) const noexcept { snapvk_device_free(d); }
};
struct ModelDeleter {
  void operator()(snapvk_model* m) const noexcept { snapvk_model_free(m); }
};
struct SessionDeleter {
  void operator()(snapvk_session* s) const noexcept { snapvk_session_free(s); }
};
// The C view of messages (valid while `messages` is).
inline std::vector<snapvk_chat_message> c_messages(const std::vector<ChatMessage>& messages) {
  std::vector<snapvk_chat_message> out(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    out[i].struct_size = sizeof(snapvk_chat_message);
    out[i].role = messages[i].role.c_str();
    out[i].content = messages[i].content.c_str();
  }
  return out;
}
}  // namespace detail

class Device {
 public:
  explicit Device(const DeviceOptions& options = DeviceOptions()) {
    snapvk_device* d = nullptr;
    check(snapvk_device_create(&options, &d));
    h_.reset(d);
  }
  // Every Vulkan device on the machine, in enumeration order.
  static std::vector<DeviceInfo> list() {
    uint32_t n = 0;
    check(snapvk_device_count(&n));
    std::vector<DeviceInfo> out(n);
    for (uint32_t i = 0; i < n; ++i) check(snapvk_device_describe(i, &out[i]));
    return out;
  }
  DeviceInfo info() const {
    DeviceInfo i;
    check(snapvk_device_get_info(h_.get(), &i));
    return i;
  }
  DeviceMemory memory() const {
    DeviceMemory m;
    check(snapvk_device_get_memory(h_.get(), &m));
    return m;
  }
  snapvk_device* get() const noexcept { return h_.get(); }

 private:
  std::unique_ptr<snapvk_device, detail::DeviceDeleter> h_;
};

class Model {
 public:
  Model(const Device& device, const std::string& path, const ModelOptions& options = ModelOptions()) {
    snapvk_model* m = nullptr;
    check(snapvk_model_load(device.get(), path.c_str(), &options, &m));
    h_.reset(m);
  }
  ModelInfo info() const {
    ModelInfo i;
    check(snapvk_model_get_info(h_.get(), &i));
    return i;
  }
  std::vector<int32_t> tokenize(const std::string& text, uint32_t flags = SNAPVK_TOKENIZE_ADD_SPECIAL) const {
    size_t n = 0;
    check(snapvk_tokenize(h_.get(), text.c_str(), flags, nullptr, 0, &n));
    std::vector<int32_t> ids(n);
    if (n) check(snapvk_tokenize(h_.get(), text.c_str(), flags, ids.data(), ids.size(), &n));
    return ids;
  }
  std::string detokenize(const std::vector<int32_t>& tokens, uint32_t flags = 0) const {
    size_t len = 0;
    check(snapvk_detokenize(h_.get(), tokens.data(), tokens.size(), flags, nullptr, 0, &len));
    std::string s(len + 1, '\0');
    check(snapvk_detokenize(h_.get(), tokens.data(), tokens.size(), flags, &s[0], s.size(), &len));
    s.resize(len);
    return s;
  }
  // The model's chat template (name, where it came from).
  ChatTemplateInfo chat_template() const {
    ChatTemplateInfo i;
    check(snapvk_model_get_chat_template(h_.get(), &i));
    return i;
  }
  // The conversation as prompt text through the model's chat template.
  std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_assistant = true) const {
    const auto c = detail::c_messages(messages);
    size_t len = 0;
    check(snapvk_chat_apply_template(h_.get(), c.data(), c.size(), add_assistant, nullptr, 0, &len));
    std::string s(len + 1, '\0');
    check(snapvk_chat_apply_template(h_.get(), c.data(), c.size(), add_assistant, &s[0], s.size(), &len));
    s.resize(len);
    return s;
  }
  snapvk_model* get() const noexcept { return h_.get(); }

 private:
  std::unique_ptr<snapvk_model, detail::ModelDeleter> h_;
};

class Session {
 public:
  // Prefill progress: (done, total) token-layers; return false to cancel the prefill.
  using ProgressFn = std::function<bool(uint64_t done, uint64_t total)>;

  explicit Session(const Model& model, const SessionOptions& options = SessionOptions(), ProgressFn on_progress = {})
      : state_(new State) {
    SessionOptions o = options;
    if (on_progress) {
      state_->progress = std::move(on_progress);
      o.on_progress = &Session::progress_trampoline;
      o.progress_user_data = state_.get();
    }
    snapvk_session* s = nullptr;
    check(snapvk_session_create(model.get(), &o, &s));
    h_.reset(s);
  }

  // Appends text (BOS when the session is empty) or token ids; throws Error (cancelled() when
  // cancelled, the session then as before the call).
  void prefill(const std::string& text) { call(snapvk_session_prefill_text(h_.get(), text.c_str())); }
  void prefill(const std::vector<int32_t>& tokens) {
    call(snapvk_session_prefill_tokens(h_.get(), tokens.data(), tokens.size()));
  }
  // The whole conversation so far (earlier messages, the answer generated since as an
  // "assistant" message, the new ones): only what is new is prefilled, through the chat template.
  void prefill_chat(const std::vector<ChatMessage>& messages, bool add_assistant = true) {
    const auto c = detail::c_messages(messages);
    call(snapvk_session_prefill_chat(h_.get(), c.data(), c.size(), add_assistant));
  }

  // Generates up to max_tokens (0: until end of generation or a full context), calling
  // on_token(token, piece) for each; on_token may return void, or bool: false stops.
  template <class F, class = std::enable_if_t<std::is_invocable_v<F&, int32_t, std::string_view>>>
  GenerateResult generate(uint32_t max_tokens, F&& on_token, const SamplingParams& params = SamplingParams()) {
    using Fn = std::remove_reference_t<F>;
    struct Ctx {
      Fn* fn;
      std::exception_ptr error;
    } ctx{&on_token, nullptr};
    auto trampoline = [](int32_t token, const char* piece, void* user) -> int {
      Ctx& c = *static_cast<Ctx*>(user);
      try {
        if constexpr (std::is_void_v<std::invoke_result_t<Fn&, int32_t, std::string_view>>) {
          (*c.fn)(token, std::string_view(piece));
          return 0;
        } else {
          return (*c.fn)(token, std::string_view(piece)) ? 0 : 1;
        }
      } catch (...) {
        c.error = std::current_exception();
        return 1;
      }
    };
    GenerateResult r;
    const snapvk_status st = snapvk_session_generate(h_.get(), &params, max_tokens, +trampoline, &ctx, &r);
    if (ctx.error) std::rethrow_exception(ctx.error);
    check(st);
    return r;
  }
  GenerateResult generate(uint32_t max_tokens, const SamplingParams& params = SamplingParams()) {
    GenerateResult r;
    check(snapvk_session_generate(h_.get(), &params, max_tokens, nullptr, nullptr, &r));
    return r;
  }
  // The generated text.
  std::string generate_text(uint32_t max_tokens, const SamplingParams& params = SamplingParams()) {
    std::string text;
    generate(max_tokens, [&text](int32_t, std::string_view piece) { text += piece; }, params);
    return text;
  }

  std::vector<float> logits() const {
    const float* p = nullptr;
    size_t n = 0;
    check(snapvk_session_get_logits(h_.get(), &p, &n));
    return std::vector<float>(p, p + n);
  }
  KvStats kv_stats() const {
    KvStats s;
    check(snapvk_session_get_kv_stats(h_.get(), &s));
    return s;
  }
  void reset() { check(snapvk_session_reset(h_.get())); }
  // Packs (docs/packs.md): the session's state to a file or bytes, and back.
  void save(const std::string& path) { check(snapvk_session_save(h_.get(), path.c_str())); }
  void load(const std::string& path) { check(snapvk_session_load(h_.get(), path.c_str())); }
  std::vector<uint8_t> save_to_memory() {
    size_t n = 0;
    check(snapvk_session_save_to_memory(h_.get(), nullptr, 0, &n));
    std::vector<uint8_t> bytes(n);
    check(snapvk_session_save_to_memory(h_.get(), bytes.data(), bytes.size(), &n));
    return bytes;
  }
  void load_from_memory(const void* data, size_t size) {
    check(snapvk_session_load_from_memory(h_.get(), data, size));
  }
  // From any thread: the running (or next) prefill/generate stops with Error::cancelled().
  void cancel() noexcept { snapvk_session_cancel(h_.get()); }
  snapvk_session* get() const noexcept { return h_.get(); }

 private:
  struct State {
    ProgressFn progress;
    std::exception_ptr error;
  };
  static int progress_trampoline(uint64_t done, uint64_t total, void* user) {
    State& s = *static_cast<State*>(user);
    try {
      return s.progress(done, total) ? 0 : 1;
    } catch (...) {
      s.error = std::current_exception();
      return 1;
    }
  }
  void call(snapvk_status st) {
    if (state_->error) {
      std::exception_ptr e = std::exchange(state_->error, nullptr);
      std::rethrow_exception(e);
    }
    check(st);
  }

  std::unique_ptr<State> state_;  // stable address for the progress callback; outlives h_
  std::unique_ptr<snapvk_session, detail::SessionDeleter> h_;
};

}  // namespace v1
}  // namespace snapvk

#endif  // SNAPVK_SNAPVK_HPP
