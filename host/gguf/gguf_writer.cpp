#include "host/gguf/gguf_writer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "runtime/error.h"

namespace snapvk {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF"
constexpr uint32_t kGgufVersion = 3;
constexpr size_t kMaxTensorName = 64;  // GGML_MAX_NAME, including the terminating NUL

// Checks that a value is well formed, so write() cannot produce a file readers reject.
void validate(const GgufValue& v, const std::string& what) {
  auto bad = [&](const std::string& why) {
    throw Error(ErrorKind::InvalidArgument, "GgufWriter: " + what + ": " + why);
  };
  if (gguf_is_integer(v.type)) {
    // Round-trip through the factories, which do the range check.
    if (gguf_is_signed(v.type)) {
      if (!std::holds_alternative<int64_t>(v.data)) bad("signed integer without an int64 slot");
      GgufValue::make_int(v.type, std::get<int64_t>(v.data));
    } else {
      if (!std::holds_alternative<uint64_t>(v.data)) bad("unsigned integer without a uint64 slot");
      GgufValue::make_uint(v.type, std::get<uint64_t>(v.data));
    }
  } else if (v.type == GgufType::F32 || v.type == GgufType::F64) {
    if (!std::holds_alternative<double>(v.data)) bad("float without a double slot");
  } else if (v.type == GgufType::Bool) {
    if (!std::holds_alternative<bool>(v.data)) bad("bool without a bool slot");
  } else if (v.type == GgufType::String) {
    if (!std::holds_alternative<std::string>(v.data)) bad("string without a string slot");
  } else if (v.type == GgufType::Array) {
    const GgufArray* a = v.array();
    if (!a) bad("array without an array slot");
    if (!gguf_type_valid(static_cast<uint32_t>(a->elem_type))) bad("array of unknown type");
    const size_t ew = gguf_scalar_size(a->elem_type);
    if (ew && (a->raw.size() % ew != 0 || !a->strings.empty() || !a->arrays.empty()))
      bad("numeric array with " + std::to_string(a->raw.size()) + " bytes for " + gguf_type_name(a->elem_type) +
          " elements");
    if (a->elem_type == GgufType::String && (!a->raw.empty() || !a->arrays.empty()))
      bad("string array with stray elements");
    // GGUF allows arrays of arrays, but llama.cpp's reader refuses them ("invalid GGUF type 9"),
    // so the writer does too.
    if (a->elem_type == GgufType::Array) bad("arrays of arrays are not readable by llama.cpp");
    if (a->elem_type == GgufType::Bool)
      for (uint8_t b : a->raw)
        if (b > 1) bad("bool array element " + std::to_string(b));
  } else {
    bad("unknown value type " + std::to_string(static_cast<uint32_t>(v.type)));
  }
}

// Accumulates the header in memory (metadata and tensor infos are small next to the data).
struct Bytes {
  std::vector<uint8_t> b;
  void put(const void* p, size_t n) {
    const size_t old = b.size();
    b.resize(old + n);
    if (n) std::memcpy(b.data() + old, p, n);
  }
  template <typename T>
  void put(T v) {
    put(&v, sizeof(T));
  }
  void put_string(std::string_view s) {
    put<uint64_t>(s.size());
    put(s.data(), s.size());
  }
  void put_value_body(const GgufValue& v);
};

void Bytes::put_value_body(const GgufValue& v) {
  switch (v.type) {
    case GgufType::U8: return put<uint8_t>(static_cast<uint8_t>(std::get<uint64_t>(v.data)));
    case GgufType::U16: return put<uint16_t>(static_cast<uint16_t>(std::get<uint64_t>(v.data)));
    case GgufType::U32: return put<uint32_t>(static_cast<uint32_t>(std::get<uint64_t>(v.data)));
    case GgufType::U64: return put<uint64_t>(std::get<uint64_t>(v.data));
    case GgufType::I8: return put<int8_t>(static_cast<int8_t>(std::get<int64_t>(v.data)));
    case GgufType::I16: return put<int16_t>(static_cast<int16_t>(std::get<int64_t>(v.data)));
    case GgufType::I32: return put<int32_t>(static_cast<int32_t>(std::get<int64_t>(v.data)));
    case GgufType::I64: return put<int64_t>(std::get<int64_t>(v.data));
    case GgufType::F32: return put<float>(static_cast<float>(std::get<double>(v.data)));
    case GgufType::F64: return put<double>(std::get<double>(v.data));
    case GgufType::Bool: return put<uint8_t>(std::get<bool>(v.data) ? 1 : 0);
    case GgufType::String: return put_string(std::get<std::string>(v.data));
    case GgufType::Array: {
      const GgufArray& a = std::get<GgufArray>(v.data);
      put<uint32_t>(static_cast<uint32_t>(a.elem_type));
      put<uint64_t>(a.size());
      if (a.elem_type == GgufType::String) {
        for (const std::string& s : a.strings) put_string(s);
      } else if (a.elem_type == GgufType::Array) {
        for (const GgufValue& e : a.arrays) put_value_body(e);
      } else {
        put(a.raw.data(), a.raw.size());
      }
      return;
    }
  }
}

template <typename T>
GgufArray raw_array(GgufType elem, const std::vector<T>& v) {
  GgufArray a;
  a.elem_type = elem;
  a.raw.resize(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(a.raw.data(), v.data(), a.raw.size());
  return a;
}

uint64_t align_up(uint64_t x, uint64_t a) { return x + (a - x % a) % a; }

}  // namespace

void GgufWriter::set(std::string_view key, GgufValue v) {
  if (key.empty()) throw Error(ErrorKind::InvalidArgument, "GgufWriter: empty metadata key");  // llama.cpp rejects them
  for (auto& kv : kvs_) {
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  }
  kvs_.emplace_back(std::string(key), std::move(v));
}

void GgufWriter::set_uint8(std::string_view k, uint8_t v) { set(k, GgufValue::make_uint(GgufType::U8, v)); }
void GgufWriter::set_int8(std::string_view k, int8_t v) { set(k, GgufValue::make_int(GgufType::I8, v)); }
void GgufWriter::set_uint16(std::string_view k, uint16_t v) { set(k, GgufValue::make_uint(GgufType::U16, v)); }
void GgufWriter::set_int16(std::string_view k, int16_t v) { set(k, GgufValue::make_int(GgufType::I16, v)); }
void GgufWriter::set_uint32(std::string_view k, uint32_t v) { set(k, GgufValue::make_uint(GgufType::U32, v)); }
void GgufWriter::set_int32(std::string_view k, int32_t v) { set(k, GgufValue::make_int(GgufType::I32, v)); }
void GgufWriter::set_uint64(std::string_view k, uint64_t v) { set(k, GgufValue::make_uint(GgufType::U64, v)); }
void GgufWriter::set_int64(std::string_view k, int64_t v) { set(k, GgufValue::make_int(GgufType::I64, v)); }
void GgufWriter::set_float32(std::string_view k, float v) { set(k, GgufValue::make_float(GgufType::F32, v)); }
void GgufWriter::set_float64(std::string_view k, double v) { set(k, GgufValue::make_float(GgufType::F64, v)); }
void GgufWriter::set_bool(std::string_view k, bool v) { set(k, GgufValue::make_bool(v)); }
void GgufWriter::set_string(std::string_view k, std::string_view v) { set(k, GgufValue::make_string(std::string(v))); }

void GgufWriter::set_string_array(std::string_view key, const std::vector<std::string>& v) {
  GgufArray a;
  a.elem_type = GgufType::String;
  a.strings = v;
  set(key, GgufValue::make_array(std::move(a)));
}

void GgufWriter::set_float_array(std::string_view key, const std::vector<float>& v) {
  set(key, GgufValue::make_array(raw_array(GgufType::F32, v)));
}

void GgufWriter::set_int32_array(std::string_view key, const std::vector<int32_t>& v) {
  set(key, GgufValue::make_array(raw_array(GgufType::I32, v)));
}

void GgufWriter::set_value(std::string_view key, GgufValue v) {
  validate(v, "key '" + std::string(key) + "'");
  set(key, std::move(v));
}

uint64_t GgufWriter::check_tensor(std::string_view name, GgmlType type, const std::vector<uint64_t>& ne) const {
  const std::string what = "GgufWriter: tensor '" + std::string(name) + "'";
  if (name.empty()) throw Error(ErrorKind::InvalidArgument, "GgufWriter: empty tensor name");
  if (name.size() >= kMaxTensorName)
    throw Error(ErrorKind::InvalidArgument, what + ": name is " + std::to_string(name.size()) + " bytes (max " +
                                                std::to_string(kMaxTensorName - 1) + ")");
  for (const Tensor& t : tensors_)
    if (t.name == name) throw Error(ErrorKind::InvalidArgument, what + ": duplicate tensor name");
  if (ne.empty() || ne.size() > 4)
    throw Error(ErrorKind::InvalidArgument, what + ": " + std::to_string(ne.size()) + " dimensions (need 1 to 4)");
  if (!type_traits(static_cast<uint32_t>(type)))
    throw Error(ErrorKind::InvalidArgument, what + ": unknown type id " + std::to_string(static_cast<uint32_t>(type)));
  uint64_t rows = 1;
  for (size_t i = 0; i < ne.size(); ++i) {
    if (ne[i] == 0) throw Error(ErrorKind::InvalidArgument, what + ": dimension " + std::to_string(i) + " is 0");
    if (i > 0 && __builtin_mul_overflow(rows, ne[i], &rows))
      throw Error(ErrorKind::InvalidArgument, what + ": shape overflows");
  }
  uint64_t expected = 0;
  if (__builtin_mul_overflow(row_bytes(type, ne[0]), rows, &expected))  // row_bytes checks blocks
    throw Error(ErrorKind::InvalidArgument, what + ": shape overflows");
  return expected;
}

void GgufWriter::add_tensor(std::string_view name, GgmlType type, std::vector<uint64_t> ne, const void* data,
                            size_t nbytes) {
  const uint64_t expected = check_tensor(name, type, ne);
  const std::string what = "GgufWriter: tensor '" + std::string(name) + "'";
  if (nbytes != expected)
    throw Error(ErrorKind::InvalidArgument, what + ": " + std::to_string(nbytes) + " bytes of data, but a " +
                                                type_name(type) + " tensor of this shape takes " +
                                                std::to_string(expected));
  if (nbytes && !data) throw Error(ErrorKind::InvalidArgument, what + ": null data");
  Tensor t{std::string(name), type, std::move(ne), {}, nbytes, {}};
  t.data.assign(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + nbytes);
  tensors_.push_back(std::move(t));
}

void GgufWriter::add_tensor_lazy(std::string_view name, GgmlType type, std::vector<uint64_t> ne, Fill fill) {
  const uint64_t nbytes = check_tensor(name, type, ne);
  if (!fill)
    throw Error(ErrorKind::InvalidArgument, "GgufWriter: tensor '" + std::string(name) + "': no fill function");
  tensors_.push_back(Tensor{std::string(name), type, std::move(ne), {}, nbytes, std::move(fill)});
}

uint32_t GgufWriter::alignment() const {
  for (const auto& kv : kvs_) {
    if (kv.first != "general.alignment") continue;
    if (kv.second.type != GgufType::U32)  // llama.cpp accepts no other type here
      throw Error(ErrorKind::InvalidArgument,
                  "GgufWriter: general.alignment has type " + kv.second.type_string() + ", expected u32");
    const uint64_t a = gguf_as_uint(kv.second, "GgufWriter: key 'general.alignment'");
    if (a == 0 || (a & (a - 1)) != 0 || a > (uint64_t{1} << 30))
      throw Error(ErrorKind::InvalidArgument,
                  "GgufWriter: general.alignment " + std::to_string(a) + " is not a power of two");
    return static_cast<uint32_t>(a);
  }
  return kDefaultAlignment;
}

// The header (magic to the end of the tensor infos, padded to the alignment); `data_bytes` gets
// the size of the data section.
std::vector<uint8_t> GgufWriter::header(uint64_t& data_bytes) const {
  const uint64_t align = alignment();
  Bytes h;
  h.put<uint32_t>(kGgufMagic);
  h.put<uint32_t>(kGgufVersion);
  h.put<uint64_t>(tensors_.size());
  h.put<uint64_t>(kvs_.size());
  for (const auto& [key, value] : kvs_) {
    h.put_string(key);
    h.put<uint32_t>(static_cast<uint32_t>(value.type));
    h.put_value_body(value);
  }
  uint64_t offset = 0;  // within the data section
  for (const Tensor& t : tensors_) {
    h.put_string(t.name);
    h.put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) h.put<uint64_t>(d);
    h.put<uint32_t>(static_cast<uint32_t>(t.type));
    h.put<uint64_t>(offset);
    offset = align_up(offset + t.nbytes, align);
  }
  h.b.resize(align_up(h.b.size(), align), 0);
  data_bytes = offset;
  return std::move(h.b);
}

uint64_t GgufWriter::file_size() const {
  uint64_t data_bytes = 0;
  return header(data_bytes).size() + data_bytes;
}

void GgufWriter::write(const std::string& path) const {
  const uint64_t align = alignment();
  uint64_t data_bytes = 0;
  const std::vector<uint8_t> head = header(data_bytes);

  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(ErrorKind::Io, tmp + ": cannot create: " + std::strerror(errno));
  auto fail = [&](const char* what) {
    const int e = errno;
    std::fclose(f);
    std::remove(tmp.c_str());
    throw Error(ErrorKind::Io, tmp + ": " + what + ": " + std::strerror(e));
  };
  static const uint8_t zeros[64] = {};
  if (std::fwrite(head.data(), 1, head.size(), f) != head.size()) fail("write failed");
  std::vector<uint8_t> lazy;  // the one lazy tensor being written
  for (const Tensor& t : tensors_) {
    const uint8_t* data = t.data.data();
    if (t.fill) {
      try {
        lazy.assign(t.nbytes, 0);
        t.fill(lazy.data());
      } catch (...) {
        std::fclose(f);
        std::remove(tmp.c_str());
        throw;
      }
      data = lazy.data();
    }
    if (t.nbytes && std::fwrite(data, 1, t.nbytes, f) != t.nbytes) fail("write failed");
    // Pad every tensor, the last included, as gguf-py does.
    for (uint64_t pad = align_up(t.nbytes, align) - t.nbytes; pad > 0;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(pad, sizeof(zeros)));
      if (std::fwrite(zeros, 1, n, f) != n) fail("write failed");
      pad -= n;
    }
  }
  if (std::fflush(f) != 0) fail("write failed");
  if (std::fclose(f) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw Error(ErrorKind::Io, tmp + ": close failed: " + std::strerror(e));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw Error(ErrorKind::Io, path + ": cannot rename " + tmp + " into place: " + std::strerror(e));
  }
}

}  // namespace snapvk
