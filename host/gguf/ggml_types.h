#pragma once
// ggml tensor element types as GGUF files name them (numeric ids are ggml's, stored on disk),
// with the block geometry needed to size tensor data.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace snapvk {

enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  // 4 and 5 were Q4_2 / Q4_3, removed from ggml.
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  // 31..33 were the Q4_0_4_4 / Q4_0_4_8 / Q4_0_8_8 repacks, removed from ggml.
  TQ1_0 = 34,
  TQ2_0 = 35,
  // 36..38 were the IQ4_NL_4_4 / _4_8 / _8_8 repacks, removed from ggml.
  MXFP4 = 39,
  NVFP4 = 40,
  Q1_0 = 41,
};

struct TypeTraits {
  const char* name;     // ggml's name: "f32", "q4_K", ...
  uint32_t block_size;  // elements per block
  uint32_t type_size;   // bytes per block
  bool supported;       // snapvk can (de)quantize and run it: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0,
                        // Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS
};

// Traits for a raw on-disk type id; nullptr for ids ggml does not (or no longer) define.
const TypeTraits* type_traits(uint32_t raw);

// Traits of a GgmlType value; throws snapvk::Error if the value is not a known id
// (possible only through a cast).
const TypeTraits& traits_of(GgmlType type);

// ggml's name for the type ("q4_K"), or "unknown".
const char* type_name(GgmlType type);

// Bytes taken by n consecutive elements (one row). Throws snapvk::Error if n is not a
// multiple of the block size or the byte count overflows.
uint64_t row_bytes(GgmlType type, uint64_t n);

// The supported types' names in id order, comma-separated: "f32, f16, q4_0, ..., bf16", for
// error messages.
const std::string& supported_type_names();

// Parses a type name, case-insensitively: "f32", "f16", "bf16", "q8_0", "q4_k", "iq4_xs",
// and every other ggml name above ("iq2_xxs", "tq1_0", ...). Callers that need to compute with the
// type must check type_traits(...)->supported.
std::optional<GgmlType> parse_type(std::string_view name);

}  // namespace snapvk
