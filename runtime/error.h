#pragma once
// One exception type for every failure the user can cause or the device can report.
// Its message is a single line that names the problem; the CLI prints it and exits non-zero.
// Each throw states what kind of failure it is, so callers (the C API's status codes, the
// profiler's "does not fit" rows) decide by kind, never by the message's wording. A failed
// option check also says which option (Param), so the CLI and the C API can name it in their
// own terms (--kv-window, snapvk_session_options.kv_window); host/ messages speak of the
// quantity ("the KV window"), not of a flag. runtime/ knows no option: the thrower names it.
#include <stdexcept>
#include <string>
#include <string_view>

namespace snapvk {

enum class ErrorKind {
  InvalidArgument,  // a bad option or argument, or a prompt that does not fit the context
  Io,               // a file cannot be opened, read, written or mapped
  BadModel,         // a model file's content is malformed or unsupported
  OutOfMemory,      // a memory budget refused an allocation, or the device ran out
  Device,           // no usable device or driver, a lost or hung device, another Vulkan error
  Cancelled,        // the caller asked to stop
  Internal,         // an invariant of snapvk broke (SNAPVK_ASSERT)
};

constexpr const char* error_kind_name(ErrorKind k) {
  switch (k) {
    case ErrorKind::InvalidArgument: return "invalid argument";
    case ErrorKind::Io: return "I/O error";
    case ErrorKind::BadModel: return "bad model";
    case ErrorKind::OutOfMemory: return "out of memory";
    case ErrorKind::Device: return "device error";
    case ErrorKind::Cancelled: return "cancelled";
    case ErrorKind::Internal: return "internal error";
  }
  return "?";
}

// The option an InvalidArgument error is about, named by the layer that throws it, in that
// layer's words (the session's options are keyed "kv_window", "n_ctx": host/session/options.h);
// the CLI, the C API and the server translate the name into their own spelling. `name` points
// at a string with static storage (a literal or an option table's key); null: no single option.
struct Param {
  const char* name = nullptr;
  static const Param None;
  constexpr explicit operator bool() const { return name != nullptr; }
  friend constexpr bool operator==(const Param& a, const Param& b) {
    if (!a.name || !b.name) return a.name == b.name;
    return std::string_view(a.name) == std::string_view(b.name);
  }
};
inline constexpr Param Param::None{};

constexpr const char* param_name(Param p) { return p.name ? p.name : ""; }

struct Error : std::runtime_error {
  Error(ErrorKind kind, const std::string& msg, Param param = Param::None)
      : std::runtime_error(msg), kind_(kind), param_(param) {}
  ErrorKind kind() const noexcept { return kind_; }
  Param param() const noexcept { return param_; }

 private:
  ErrorKind kind_;
  Param param_;
};

// Thrown by prefill/decode (and the C API) when cancelled; a session is left as it was before
// the call.
struct Cancelled : Error {
  Cancelled() : Error(ErrorKind::Cancelled, "cancelled") {}
};

}  // namespace snapvk
