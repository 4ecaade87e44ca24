#include "host/gguf/gguf_value.h"

#include <cstring>
#include <limits>

#include "runtime/error.h"

namespace snapvk {

std::string gguf_type_name(GgufType type) {
  switch (type) {
    case GgufType::U8: return "u8";
    case GgufType::I8: return "i8";
    case GgufType::U16: return "u16";
    case GgufType::I16: return "i16";
    case GgufType::U32: return "u32";
    case GgufType::I32: return "i32";
    case GgufType::F32: return "f32";
    case GgufType::Bool: return "bool";
    case GgufType::String: return "string";
    case GgufType::Array: return "array";
    case GgufType::U64: return "u64";
    case GgufType::I64: return "i64";
    case GgufType::F64: return "f64";
  }
  return "type " + std::to_string(static_cast<uint32_t>(type));
}

size_t gguf_scalar_size(GgufType type) {
  switch (type) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::Bool: return 1;
    case GgufType::U16:
    case GgufType::I16: return 2;
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::F32: return 4;
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::F64: return 8;
    case GgufType::String:
    case GgufType::Array: return 0;
  }
  return 0;
}

bool gguf_is_integer(GgufType type) {
  switch (type) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::U16:
    case GgufType::I16:
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::U64:
    case GgufType::I64: return true;
    default: return false;
  }
}

bool gguf_is_signed(GgufType type) {
  return type == GgufType::I8 || type == GgufType::I16 || type == GgufType::I32 || type == GgufType::I64;
}

bool gguf_type_valid(uint32_t raw) { return raw <= static_cast<uint32_t>(GgufType::F64); }

uint64_t GgufArray::size() const {
  if (elem_type == GgufType::String) return strings.size();
  if (elem_type == GgufType::Array) return arrays.size();
  const size_t w = gguf_scalar_size(elem_type);
  return w ? raw.size() / w : 0;
}

// ---- factories ---------------------------------------------------------------------------------

namespace {

[[noreturn]] void bad_factory(const char* fn, GgufType t) {
  throw Error(ErrorKind::InvalidArgument,
              std::string("GgufValue::") + fn + ": type " + gguf_type_name(t) + " does not fit");
}

// Largest value an integer type of `bytes` bytes can hold (unsigned).
uint64_t umax_of(size_t bytes) { return bytes >= 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * bytes)) - 1; }

}  // namespace

GgufValue GgufValue::make_uint(GgufType t, uint64_t v) {
  if (!gguf_is_integer(t) || gguf_is_signed(t) || v > umax_of(gguf_scalar_size(t))) bad_factory("make_uint", t);
  GgufValue r;
  r.type = t;
  r.data.emplace<uint64_t>(v);
  return r;
}

GgufValue GgufValue::make_int(GgufType t, int64_t v) {
  if (!gguf_is_signed(t)) bad_factory("make_int", t);
  const size_t bits = 8 * gguf_scalar_size(t);
  if (bits < 64) {
    const int64_t lim = int64_t{1} << (bits - 1);
    if (v < -lim || v >= lim) bad_factory("make_int", t);
  }
  GgufValue r;
  r.type = t;
  r.data.emplace<int64_t>(v);
  return r;
}

GgufValue GgufValue::make_float(GgufType t, double v) {
  if (t != GgufType::F32 && t != GgufType::F64) bad_factory("make_float", t);
  GgufValue r;
  r.type = t;
  // Keep exactly what will be stored on disk.
  r.data.emplace<double>(t == GgufType::F32 ? static_cast<double>(static_cast<float>(v)) : v);
  return r;
}

GgufValue GgufValue::make_bool(bool v) {
  GgufValue r;
  r.type = GgufType::Bool;
  r.data.emplace<bool>(v);
  return r;
}

GgufValue GgufValue::make_string(std::string v) {
  GgufValue r;
  r.type = GgufType::String;
  r.data.emplace<std::string>(std::move(v));
  return r;
}

GgufValue GgufValue::make_array(GgufArray a) {
  GgufValue r;
  r.type = GgufType::Array;
  r.data.emplace<GgufArray>(std::move(a));
  return r;
}

std::string GgufValue::type_string() const {
  if (const GgufArray* a = array()) {
    if (a->elem_type == GgufType::Array)
      return "array[" + (a->arrays.empty() ? std::string("array") : a->arrays[0].type_string()) + "]";
    return "array[" + gguf_type_name(a->elem_type) + "]";
  }
  return gguf_type_name(type);
}

// ---- conversions -------------------------------------------------------------------------------

namespace {

[[noreturn]] void wrong_type(const GgufValue& v, const std::string& what, const char* expected) {
  throw Error(ErrorKind::BadModel, what + " has type " + v.type_string() + ", expected " + expected);
}

// One integer array element, widened: read `bits` as uint64 if !negative, else as int64.
struct IntElem {
  bool negative;
  uint64_t bits;
};

IntElem int_elem(GgufType t, const uint8_t* p) {
  switch (t) {
    case GgufType::U8: return {false, p[0]};
    case GgufType::I8: {
      int8_t v;
      std::memcpy(&v, p, 1);
      return {v < 0, static_cast<uint64_t>(int64_t{v})};
    }
    case GgufType::U16: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return {false, v};
    }
    case GgufType::I16: {
      int16_t v;
      std::memcpy(&v, p, 2);
      return {v < 0, static_cast<uint64_t>(int64_t{v})};
    }
    case GgufType::U32: {
      uint32_t v;
      std::memcpy(&v, p, 4);
      return {false, v};
    }
    case GgufType::I32: {
      int32_t v;
      std::memcpy(&v, p, 4);
      return {v < 0, static_cast<uint64_t>(int64_t{v})};
    }
    case GgufType::U64: {
      uint64_t v;
      std::memcpy(&v, p, 8);
      return {false, v};
    }
    case GgufType::I64: {
      int64_t v;
      std::memcpy(&v, p, 8);
      return {v < 0, static_cast<uint64_t>(v)};
    }
    default: return {false, 0};
  }
}

std::string int_text(const IntElem& e) {
  return e.negative ? std::to_string(static_cast<int64_t>(e.bits)) : std::to_string(e.bits);
}

}  // namespace

uint64_t gguf_as_uint(const GgufValue& v, const std::string& what) {
  if (const auto* u = std::get_if<uint64_t>(&v.data)) return *u;
  if (const auto* i = std::get_if<int64_t>(&v.data)) {
    if (*i < 0)
      throw Error(ErrorKind::BadModel, what + " is " + std::to_string(*i) + ", expected a non-negative integer");
    return static_cast<uint64_t>(*i);
  }
  wrong_type(v, what, "unsigned integer");
}

int64_t gguf_as_int(const GgufValue& v, const std::string& what) {
  if (const auto* i = std::get_if<int64_t>(&v.data)) return *i;
  if (const auto* u = std::get_if<uint64_t>(&v.data)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw Error(ErrorKind::BadModel, what + " is " + std::to_string(*u) + ", out of range for int64");
    return static_cast<int64_t>(*u);
  }
  wrong_type(v, what, "integer");
}

float gguf_as_float(const GgufValue& v, const std::string& what) {
  if (const auto* d = std::get_if<double>(&v.data)) return static_cast<float>(*d);
  if (const auto* u = std::get_if<uint64_t>(&v.data)) return static_cast<float>(*u);
  if (const auto* i = std::get_if<int64_t>(&v.data)) return static_cast<float>(*i);
  wrong_type(v, what, "number");
}

bool gguf_as_bool(const GgufValue& v, const std::string& what) {
  if (const auto* b = std::get_if<bool>(&v.data)) return *b;
  wrong_type(v, what, "bool");
}

const std::string& gguf_as_string(const GgufValue& v, const std::string& what) {
  if (const auto* s = std::get_if<std::string>(&v.data)) return *s;
  wrong_type(v, what, "string");
}

const std::vector<std::string>& gguf_as_string_array(const GgufValue& v, const std::string& what) {
  const GgufArray* a = v.array();
  if (!a || a->elem_type != GgufType::String) wrong_type(v, what, "array[string]");
  return a->strings;
}

std::vector<float> gguf_as_float_array(const GgufValue& v, const std::string& what) {
  const GgufArray* a = v.array();
  if (!a || !(a->elem_type == GgufType::F32 || a->elem_type == GgufType::F64 || gguf_is_integer(a->elem_type)))
    wrong_type(v, what, "array of numbers");
  const size_t w = gguf_scalar_size(a->elem_type);
  std::vector<float> out(a->size());
  for (size_t i = 0; i < out.size(); ++i) {
    const uint8_t* p = a->raw.data() + i * w;
    if (a->elem_type == GgufType::F32) {
      std::memcpy(&out[i], p, 4);
    } else if (a->elem_type == GgufType::F64) {
      double d;
      std::memcpy(&d, p, 8);
      out[i] = static_cast<float>(d);
    } else {
      const IntElem e = int_elem(a->elem_type, p);
      out[i] = e.negative ? static_cast<float>(static_cast<int64_t>(e.bits)) : static_cast<float>(e.bits);
    }
  }
  return out;
}

std::vector<int32_t> gguf_as_int_array(const GgufValue& v, const std::string& what) {
  const GgufArray* a = v.array();
  if (!a || !gguf_is_integer(a->elem_type)) wrong_type(v, what, "array of integers");
  const size_t w = gguf_scalar_size(a->elem_type);
  std::vector<int32_t> out(a->size());
  for (size_t i = 0; i < out.size(); ++i) {
    const IntElem e = int_elem(a->elem_type, a->raw.data() + i * w);
    const int64_t lo = std::numeric_limits<int32_t>::min(), hi = std::numeric_limits<int32_t>::max();
    const bool fits = e.negative ? static_cast<int64_t>(e.bits) >= lo : e.bits <= static_cast<uint64_t>(hi);
    if (!fits)
      throw Error(ErrorKind::BadModel,
                  what + " element " + std::to_string(i) + " is " + int_text(e) + ", out of range for int32");
    out[i] = static_cast<int32_t>(static_cast<int64_t>(e.bits));
  }
  return out;
}

}  // namespace snapvk
