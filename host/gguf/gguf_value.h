#pragma once
// A GGUF metadata value: a type tag plus the value. Shared by the reader (gguf.h) and the
// writer (gguf_writer.h).
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace snapvk {

// GGUF metadata value types, numbered as on disk.
enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

// "u8", "i32", "f32", "bool", "string", "array", ... ; "type N" for ids out of range.
std::string gguf_type_name(GgufType type);
// Bytes of one on-disk scalar (1..8); 0 for String and Array.
size_t gguf_scalar_size(GgufType type);
bool gguf_is_integer(GgufType type);
bool gguf_is_signed(GgufType type);  // I8, I16, I32, I64
bool gguf_type_valid(uint32_t raw);  // 0..12

struct GgufValue;

// Array elements are stored by kind to keep big arrays compact: a 50000-entry f32 array is
// 200 KB of raw bytes, not 50000 GgufValues.
struct GgufArray {
  GgufType elem_type = GgufType::U8;
  std::vector<uint8_t> raw;          // numeric / bool elements, packed little-endian as on disk
  std::vector<std::string> strings;  // elem_type == String
  std::vector<GgufValue> arrays;     // elem_type == Array (each one holds a GgufArray)

  uint64_t size() const;
};

struct GgufValue {
  GgufType type = GgufType::U8;
  // One slot per kind, whatever the width: U8..U64 -> uint64_t, I8..I64 -> int64_t,
  // F32/F64 -> double (exact for f32), Bool -> bool, String -> std::string, Array -> GgufArray.
  // `type` keeps the on-disk width so a value can be written back unchanged.
  std::variant<uint64_t, int64_t, double, bool, std::string, GgufArray> data;

  // The factories check that the tag fits the slot and the value fits the width
  // (make_uint(GgufType::U8, 300) throws snapvk::Error).
  static GgufValue make_uint(GgufType t, uint64_t v);
  static GgufValue make_int(GgufType t, int64_t v);
  static GgufValue make_float(GgufType t, double v);
  static GgufValue make_bool(bool v);
  static GgufValue make_string(std::string v);
  static GgufValue make_array(GgufArray a);

  // "u32", "string", "array[f32]", "array[array[string]]".
  std::string type_string() const;
  const GgufArray* array() const { return std::get_if<GgufArray>(&data); }
};

// Conversions used by GgufFile's typed getters. `what` names the value in error messages
// ("model.gguf: key 'llama.block_count'"); every failure throws snapvk::Error.
// Integers convert between widths with range checks; floats accept f32, f64 and integers.
uint64_t gguf_as_uint(const GgufValue& v, const std::string& what);
int64_t gguf_as_int(const GgufValue& v, const std::string& what);
float gguf_as_float(const GgufValue& v, const std::string& what);
bool gguf_as_bool(const GgufValue& v, const std::string& what);
const std::string& gguf_as_string(const GgufValue& v, const std::string& what);
const std::vector<std::string>& gguf_as_string_array(const GgufValue& v, const std::string& what);
std::vector<float> gguf_as_float_array(const GgufValue& v, const std::string& what);
std::vector<int32_t> gguf_as_int_array(const GgufValue& v, const std::string& what);

}  // namespace snapvk
