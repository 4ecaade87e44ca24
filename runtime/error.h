#pragma once
// One exception type for every failure the user can cause or the device can report.
// Its message is a single line that names the problem; the CLI prints it and exits non-zero.
// Each throw states what kind of failure it is, so callers (the C API's status codes, the
// profiler's "does not fit" rows) decide by kind, never by the message's wording. A failed
// option check also says which option (Param), so the CLI and the C API can name it in their
// own terms (--kv-window, snapvk_session_options.kv_window); host/ messages speak of the
// quantity ("the KV window"), not of a flag.
#include <stdexcept>
#include <string>

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

// The session option an InvalidArgument error is about (None: no single option).
enum class Param {
  None,
  KvPolicy,
  KvBudget,
  KvRatio,
  KvWindow,
  KvKernel,
  KvPoolAhead,
  KvPool,
  KvGqa,
  KvType,
  NCtx,
  NBatch,
  KvCompleteWords,
};

// The option's name in SessionOptions (and in the C API's snapvk_session_options): "kv_window".
constexpr const char* param_name(Param p) {
  switch (p) {
    case Param::None: return "";
    case Param::KvPolicy: return "kv_policy";
    case Param::KvBudget: return "kv_budget";
    case Param::KvRatio: return "kv_ratio";
    case Param::KvWindow: return "kv_window";
    case Param::KvKernel: return "kv_kernel";
    case Param::KvPoolAhead: return "kv_pool_ahead";
    case Param::KvPool: return "kv_pool";
    case Param::KvGqa: return "kv_gqa";
    case Param::KvType: return "kv_type";
    case Param::NCtx: return "n_ctx";
    case Param::NBatch: return "n_batch";
    case Param::KvCompleteWords: return "kv_complete_words";
  }
  return "";
}

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
