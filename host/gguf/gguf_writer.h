#pragma once
// Writes standard GGUF v3 files that llama.cpp and gguf-py load. Tensor data is aligned to 32
// bytes, or to general.alignment if that key is set (it must then be a u32 power of two).
//
//   GgufWriter w;
//   w.set_string("general.architecture", "llama");
//   w.set_uint32("llama.block_count", 5);
//   w.add_tensor("token_embd.weight", GgmlType::F32, {64, 512}, data, 64 * 512 * 4);
//   w.write("out.gguf");
//
// Keys and tensors are written in the order they were first added. Setting a key again replaces
// its value in place. Tensor data is copied at add_tensor.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "host/gguf/ggml_types.h"
#include "host/gguf/gguf_value.h"

namespace snapvk {

class GgufWriter {
 public:
  void set_uint8(std::string_view key, uint8_t v);
  void set_int8(std::string_view key, int8_t v);
  void set_uint16(std::string_view key, uint16_t v);
  void set_int16(std::string_view key, int16_t v);
  void set_uint32(std::string_view key, uint32_t v);
  void set_int32(std::string_view key, int32_t v);
  void set_uint64(std::string_view key, uint64_t v);
  void set_int64(std::string_view key, int64_t v);
  void set_float32(std::string_view key, float v);
  void set_float64(std::string_view key, double v);
  void set_bool(std::string_view key, bool v);
  void set_string(std::string_view key, std::string_view v);
  void set_string_array(std::string_view key, const std::vector<std::string>& v);
  void set_float_array(std::string_view key, const std::vector<float>& v);
  void set_int32_array(std::string_view key, const std::vector<int32_t>& v);
  // Any value, e.g. one copied from a GgufFile. Throws snapvk::Error if the value is malformed
  // (wrong slot for its tag, value out of range for its width, raw array bytes not a multiple of
  // the element size) or is an array of arrays, which llama.cpp cannot read.
  // Every setter throws on an empty key (llama.cpp rejects those too).
  void set_value(std::string_view key, GgufValue v);

  // Adds a tensor; ne[0] is the contiguous dimension (1 to 4 dims, each > 0, ne[0] a multiple
  // of the type's block size). Throws snapvk::Error if the name is empty, 64 bytes or longer
  // (ggml's limit), already used, or nbytes differs from the size the shape and type imply.
  void add_tensor(std::string_view name, GgmlType type, std::vector<uint64_t> ne, const void* data, size_t nbytes);

  // As add_tensor, but the data is made at write() time: fill(dst) must write all of the
  // tensor's bytes (row_bytes(type, ne[0]) * rows) into dst. Only one such buffer is alive at a
  // time, so a file bigger than memory can be written one tensor at a time. Same checks.
  using Fill = std::function<void(uint8_t* dst)>;
  void add_tensor_lazy(std::string_view name, GgmlType type, std::vector<uint64_t> ne, Fill fill);

  // Writes path + ".tmp" and renames it over path, so a failed write never leaves a truncated
  // file under the final name. Throws snapvk::Error on any I/O failure.
  void write(const std::string& path) const;

  // Bytes write() would produce: header, metadata, tensor infos, data and padding.
  uint64_t file_size() const;

  static constexpr uint32_t kDefaultAlignment = 32;

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<uint64_t> ne;
    std::vector<uint8_t> data;  // empty for a lazy tensor
    uint64_t nbytes = 0;
    Fill fill;  // lazy tensors only
  };
  void set(std::string_view key, GgufValue v);
  uint64_t check_tensor(std::string_view name, GgmlType type, const std::vector<uint64_t>& ne) const;
  uint32_t alignment() const;
  std::vector<uint8_t> header(uint64_t& data_bytes) const;

  std::vector<std::pair<std::string, GgufValue>> kvs_;
  std::vector<Tensor> tensors_;
};

}  // namespace snapvk
