#pragma once
// Checked arithmetic for sizes, counts and offsets computed from untrusted numbers (GGUF
// metadata, options, API arguments). A result that would wrap throws snapvk::Error with one
// line naming the quantity, e.g. "n_head_kv * n_ctx (1024 * 16777216) overflows 32 bits".
// The error's kind is the caller's: InvalidArgument for options and arguments (the default),
// BadModel for numbers read from a model file; `param` names the option when there is one.
#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/error.h"

namespace snapvk {

// a * b, or Error("<what> (a * b) overflows 64 bits").
inline uint64_t checked_mul(uint64_t a, uint64_t b, std::string_view what, ErrorKind kind = ErrorKind::InvalidArgument,
                            Param param = Param::None) {
  uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    throw Error(kind, std::string(what) + " (" + std::to_string(a) + " * " + std::to_string(b) + ") overflows 64 bits",
                param);
  return r;
}

// a + b, or Error("<what> (a + b) overflows 64 bits").
inline uint64_t checked_add(uint64_t a, uint64_t b, std::string_view what, ErrorKind kind = ErrorKind::InvalidArgument,
                            Param param = Param::None) {
  uint64_t r = 0;
  if (__builtin_add_overflow(a, b, &r))
    throw Error(kind, std::string(what) + " (" + std::to_string(a) + " + " + std::to_string(b) + ") overflows 64 bits",
                param);
  return r;
}

// a * b as the 32-bit count a kernel or a 32-bit index takes, or
// Error("<what> (a * b) overflows 32 bits").
inline uint32_t checked_mul_u32(uint64_t a, uint64_t b, std::string_view what,
                                ErrorKind kind = ErrorKind::InvalidArgument, Param param = Param::None) {
  uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r) || r > UINT32_MAX)
    throw Error(kind, std::string(what) + " (" + std::to_string(a) + " * " + std::to_string(b) + ") overflows 32 bits",
                param);
  return uint32_t(r);
}

// v if lo <= v <= hi, or Error("<what> <v> is out of range (lo..hi)").
inline uint64_t checked_range(uint64_t v, uint64_t lo, uint64_t hi, std::string_view what,
                              ErrorKind kind = ErrorKind::InvalidArgument, Param param = Param::None) {
  if (v < lo || v > hi)
    throw Error(kind,
                std::string(what) + " " + std::to_string(v) + " is out of range (" + std::to_string(lo) + ".." +
                    std::to_string(hi) + ")",
                param);
  return v;
}

}  // namespace snapvk
