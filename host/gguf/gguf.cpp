#include "host/gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "runtime/error.h"

namespace snapvk {

static_assert(std::endian::native == std::endian::little, "GGUF is read in place: little-endian hosts only");

namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" as a little-endian u32
constexpr int kMaxArrayDepth = 8;            // nested arrays deeper than this are refused
// Smallest possible on-disk sizes, used to bound counts before allocating anything.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;              // empty key, type, 1-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;  // empty name, n_dims 0, type, offset

std::string hex_bytes(const uint8_t* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    if (i) s += ' ';
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

std::string shape_text(const uint64_t* ne, size_t n) {
  std::string s = "[";
  for (size_t i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

}  // namespace

std::string GgufTensor::shape_string() const { return shape_text(ne, n_dims); }

// Walks the mapped bytes with a cursor; every read is bounds-checked and every failure names
// the file and what was being read.
class GgufParser {
 public:
  explicit GgufParser(GgufFile& f) : f_(f), p_(f.base_), size_(f.size_) {}

  void parse() {
    parse_header();
    const uint64_t n_tensors = n_tensors_, n_kv = n_kv_;
    if (n_kv > remaining() / kMinKvBytes)
      fail("metadata count " + std::to_string(n_kv) + " cannot fit in the file (size " + std::to_string(size_) + ")");
    f_.kvs_.reserve(n_kv);
    for (uint64_t i = 0; i < n_kv; ++i) parse_kv(i);
    read_alignment();
    if (n_tensors > remaining() / kMinTensorInfoBytes)
      fail("tensor count " + std::to_string(n_tensors) + " cannot fit in the file (size " + std::to_string(size_) +
           ")");
    f_.tensors_.reserve(n_tensors);
    for (uint64_t i = 0; i < n_tensors; ++i) parse_tensor_info(i);
    // The data section starts at the next aligned offset. For a file without tensors it may
    // lie past the end (llama.cpp's vocab-only files are not padded), which is fine.
    f_.data_offset_ = pos_ + (f_.alignment_ - pos_ % f_.alignment_) % f_.alignment_;
    for (GgufTensor& t : f_.tensors_) place_tensor(t);
  }

 private:
  [[noreturn]] void fail(const std::string& msg) const { throw Error(ErrorKind::BadModel, f_.path_ + ": " + msg); }

  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& what) const {
    if (n > remaining())
      fail("truncated " + what + " at offset " + std::to_string(pos_) + " (need " + std::to_string(n) +
           " bytes, file size " + std::to_string(size_) + ")");
  }

  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const std::string& what) {
    const uint64_t at = pos_;
    const uint64_t len = read<uint64_t>(what + " length");
    if (len > remaining())
      fail(what + ": string length " + std::to_string(len) + " at offset " + std::to_string(at) +
           " runs past end of file (size " + std::to_string(size_) + ")");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(len));
    pos_ += len;
    return s;
  }

  void parse_header() {
    if (size_ < 4) fail("not a GGUF file (only " + std::to_string(size_) + " bytes)");
    uint32_t magic;
    std::memcpy(&magic, p_, 4);
    if (magic != kGgufMagic) fail("not a GGUF file (starts with " + hex_bytes(p_, 4) + ")");
    pos_ = 4;
    const uint32_t version = read<uint32_t>("header (version)");
    if (version == 1) fail("GGUF version 1 is not supported (need version 2 or 3)");
    if (version != 2 && version != 3) {
      const bool swapped = (version & 0xffff) == 0 && (version >> 24) >= 1 && (version >> 24) <= 3;
      fail("unsupported GGUF version " + std::to_string(version) + " (need 2 or 3)" +
           (swapped ? "; big-endian file?" : ""));
    }
    f_.version_ = version;
    n_tensors_ = read<uint64_t>("header (tensor count)");
    n_kv_ = read<uint64_t>("header (metadata count)");
  }

  void parse_kv(uint64_t index) {
    std::string key = read_string("key of metadata entry " + std::to_string(index));
    const std::string what = "key '" + key + "'";
    const uint32_t raw_type = read<uint32_t>(what + " type");
    if (!gguf_type_valid(raw_type)) fail(what + " has unknown value type " + std::to_string(raw_type));
    GgufValue value = read_value(static_cast<GgufType>(raw_type), what, 0);
    if (f_.kv_index_.count(key)) fail("duplicate " + what);
    f_.kv_index_.emplace(key, f_.kvs_.size());
    f_.kvs_.push_back({std::move(key), std::move(value)});
  }

  GgufValue read_value(GgufType type, const std::string& what, int depth) {
    switch (type) {
      case GgufType::U8: return GgufValue::make_uint(type, read<uint8_t>(what));
      case GgufType::U16: return GgufValue::make_uint(type, read<uint16_t>(what));
      case GgufType::U32: return GgufValue::make_uint(type, read<uint32_t>(what));
      case GgufType::U64: return GgufValue::make_uint(type, read<uint64_t>(what));
      case GgufType::I8: return GgufValue::make_int(type, read<int8_t>(what));
      case GgufType::I16: return GgufValue::make_int(type, read<int16_t>(what));
      case GgufType::I32: return GgufValue::make_int(type, read<int32_t>(what));
      case GgufType::I64: return GgufValue::make_int(type, read<int64_t>(what));
      case GgufType::F32: return GgufValue::make_float(type, read<float>(what));
      case GgufType::F64: return GgufValue::make_float(type, read<double>(what));
      case GgufType::Bool: {
        const uint8_t b = read<uint8_t>(what);
        if (b > 1) fail(what + " has bool value " + std::to_string(b) + " (expected 0 or 1)");
        return GgufValue::make_bool(b != 0);
      }
      case GgufType::String: return GgufValue::make_string(read_string(what));
      case GgufType::Array: return GgufValue::make_array(read_array(what, depth + 1));
    }
    fail(what + " has unknown value type " + std::to_string(static_cast<uint32_t>(type)));
  }

  GgufArray read_array(const std::string& what, int depth) {
    if (depth > kMaxArrayDepth) fail(what + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
    const uint32_t raw_type = read<uint32_t>(what + " array type");
    if (!gguf_type_valid(raw_type)) fail(what + " is an array of unknown value type " + std::to_string(raw_type));
    GgufArray a;
    a.elem_type = static_cast<GgufType>(raw_type);
    const uint64_t at = pos_;
    const uint64_t count = read<uint64_t>(what + " array count");
    // Each element takes at least this many bytes in the file: bound the count by what is left.
    const size_t scalar = gguf_scalar_size(a.elem_type);
    const uint64_t min_elem = scalar ? scalar : a.elem_type == GgufType::String ? 8 : 12;
    if (count > remaining() / min_elem)
      fail(what + ": array of " + std::to_string(count) + " " + gguf_type_name(a.elem_type) + " elements at offset " +
           std::to_string(at) + " runs past end of file (size " + std::to_string(size_) + ")");
    if (scalar) {
      a.raw.assign(p_ + pos_, p_ + pos_ + count * scalar);
      if (a.elem_type == GgufType::Bool)
        for (uint8_t b : a.raw)
          if (b > 1) fail(what + " has bool element " + std::to_string(b) + " (expected 0 or 1)");
      pos_ += count * scalar;
    } else if (a.elem_type == GgufType::String) {
      a.strings.reserve(count);
      for (uint64_t i = 0; i < count; ++i) a.strings.push_back(read_string(what));
    } else {
      a.arrays.reserve(count);
      for (uint64_t i = 0; i < count; ++i) a.arrays.push_back(read_value(GgufType::Array, what, depth));
    }
    return a;
  }

  void read_alignment() {
    const GgufValue* v = f_.find("general.alignment");
    if (!v) return;
    const uint64_t a = gguf_as_uint(*v, f_.path_ + ": key 'general.alignment'");
    if (a == 0 || (a & (a - 1)) != 0 || a > (uint64_t{1} << 30))
      fail("general.alignment " + std::to_string(a) + " is not a power of two (up to 2^30)");
    f_.alignment_ = static_cast<uint32_t>(a);
  }

  void parse_tensor_info(uint64_t index) {
    GgufTensor t;
    t.name = read_string("name of tensor " + std::to_string(index));
    const std::string what = "tensor '" + t.name + "'";
    t.n_dims = read<uint32_t>(what + " dimension count");
    if (t.n_dims > 4) fail(what + " has " + std::to_string(t.n_dims) + " dimensions (max 4)");
    uint64_t n_elements = 1;
    for (uint32_t j = 0; j < t.n_dims; ++j) {
      t.ne[j] = read<uint64_t>(what + " shape");
      if (t.ne[j] == 0) fail(what + " has a zero dimension (ne[" + std::to_string(j) + "] = 0)");
      if (__builtin_mul_overflow(n_elements, t.ne[j], &n_elements) ||
          n_elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail(what + " shape " + shape_text(t.ne, t.n_dims) + " overflows the element count");
    }
    const uint32_t raw_type = read<uint32_t>(what + " type");
    const TypeTraits* traits = type_traits(raw_type);
    if (!traits) fail(what + " has unknown type id " + std::to_string(raw_type));
    t.type = static_cast<GgmlType>(raw_type);
    t.offset = read<uint64_t>(what + " offset");
    if (t.ne[0] % traits->block_size != 0)
      fail(what + " row length " + std::to_string(t.ne[0]) + " is not a multiple of the " + traits->name +
           " block size " + std::to_string(traits->block_size));
    // Bytes = blocks per row * block bytes * rows; n_elements fits int64, so only the byte
    // product can overflow.
    const uint64_t rows = n_elements / t.ne[0];
    if (__builtin_mul_overflow(t.ne[0] / traits->block_size, uint64_t{traits->type_size}, &t.nbytes) ||
        __builtin_mul_overflow(t.nbytes, rows, &t.nbytes))
      fail(what + " shape " + shape_text(t.ne, t.n_dims) + " overflows the byte size");
    if (f_.tensor_index_.count(t.name)) fail("duplicate tensor name '" + t.name + "'");
    f_.tensor_index_.emplace(t.name, f_.tensors_.size());
    f_.tensors_.push_back(std::move(t));
  }

  // Checks a tensor's offset and extent against the file and sets its data pointer.
  void place_tensor(GgufTensor& t) const {
    const std::string what = "tensor '" + t.name + "'";
    if (t.offset % f_.alignment_ != 0)
      fail(what + " offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
           std::to_string(f_.alignment_));
    uint64_t start = 0, end = 0;
    const bool overflow =
        __builtin_add_overflow(f_.data_offset_, t.offset, &start) || __builtin_add_overflow(start, t.nbytes, &end);
    if (overflow || end > size_)
      fail(what + " data [offset " + std::to_string(t.offset) + ", " + std::to_string(t.nbytes) +
           " bytes] extends past end of file (size " + std::to_string(size_) + ", data section at " +
           std::to_string(f_.data_offset_) + ")");
    t.data = p_ + start;
  }

  GgufFile& f_;
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  uint64_t n_tensors_ = 0, n_kv_ = 0;
};

// ---- GgufFile ----------------------------------------------------------------------------------

GgufFile GgufFile::open(const std::string& path) {
  GgufFile f;
  f.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(ErrorKind::Io, path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error(ErrorKind::Io, path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(ErrorKind::Io, path + ": not a regular file");
  }
  f.size_ = static_cast<uint64_t>(st.st_size);
  if (f.size_ == 0) {
    ::close(fd);
    throw Error(ErrorKind::BadModel, path + ": not a GGUF file (empty)");
  }
  if (f.size_ > std::numeric_limits<size_t>::max()) {
    ::close(fd);
    throw Error(ErrorKind::Io, path + ": too large to map");
  }
  void* m = ::mmap(nullptr, static_cast<size_t>(f.size_), PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);  // the mapping keeps the file referenced
  if (m == MAP_FAILED) throw Error(ErrorKind::Io, path + ": cannot map: " + std::strerror(map_errno));
  f.base_ = static_cast<const uint8_t*>(m);
  f.mapped_ = true;
  f.parse();  // on throw, f's destructor unmaps
  return f;
}

GgufFile GgufFile::from_memory(const void* data, size_t size, const std::string& name) {
  GgufFile f;
  f.path_ = name;
  if (!data || size == 0) throw Error(ErrorKind::BadModel, name + ": not a GGUF file (empty)");
  f.base_ = static_cast<const uint8_t*>(data);
  f.size_ = size;
  f.parse();
  return f;
}

void GgufFile::parse() { GgufParser(*this).parse(); }

GgufFile::GgufFile(GgufFile&& other) noexcept { *this = std::move(other); }

GgufFile& GgufFile::operator=(GgufFile&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    base_ = std::exchange(other.base_, nullptr);
    mapped_ = std::exchange(other.mapped_, false);
    size_ = std::exchange(other.size_, 0);
    version_ = other.version_;
    alignment_ = other.alignment_;
    data_offset_ = other.data_offset_;
    kvs_ = std::move(other.kvs_);
    kv_index_ = std::move(other.kv_index_);
    tensors_ = std::move(other.tensors_);  // data pointers stay valid: the mapping moved with them
    tensor_index_ = std::move(other.tensor_index_);
  }
  return *this;
}

GgufFile::~GgufFile() { release(); }

void GgufFile::release() noexcept {
  if (base_ && mapped_) ::munmap(const_cast<uint8_t*>(base_), static_cast<size_t>(size_));
  base_ = nullptr;
  mapped_ = false;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kvs_[it->second].value;
}

std::string GgufFile::what(std::string_view key) const { return path_ + ": key '" + std::string(key) + "'"; }

const GgufValue& GgufFile::require(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) throw Error(ErrorKind::BadModel, path_ + ": missing key '" + std::string(key) + "'");
  return *v;
}

uint64_t GgufFile::get_uint(std::string_view key, uint64_t def) const {
  const GgufValue* v = find(key);
  return v ? gguf_as_uint(*v, what(key)) : def;
}
int64_t GgufFile::get_int(std::string_view key, int64_t def) const {
  const GgufValue* v = find(key);
  return v ? gguf_as_int(*v, what(key)) : def;
}
float GgufFile::get_float(std::string_view key, float def) const {
  const GgufValue* v = find(key);
  return v ? gguf_as_float(*v, what(key)) : def;
}
bool GgufFile::get_bool(std::string_view key, bool def) const {
  const GgufValue* v = find(key);
  return v ? gguf_as_bool(*v, what(key)) : def;
}
std::string GgufFile::get_string(std::string_view key, std::string def) const {
  const GgufValue* v = find(key);
  return v ? gguf_as_string(*v, what(key)) : def;
}
std::vector<std::string> GgufFile::get_string_array(std::string_view key) const {
  const GgufValue* v = find(key);
  return v ? gguf_as_string_array(*v, what(key)) : std::vector<std::string>{};
}
std::vector<float> GgufFile::get_float_array(std::string_view key) const {
  const GgufValue* v = find(key);
  return v ? gguf_as_float_array(*v, what(key)) : std::vector<float>{};
}
std::vector<int32_t> GgufFile::get_int_array(std::string_view key) const {
  const GgufValue* v = find(key);
  return v ? gguf_as_int_array(*v, what(key)) : std::vector<int32_t>{};
}

uint64_t GgufFile::require_uint(std::string_view key) const { return gguf_as_uint(require(key), what(key)); }
int64_t GgufFile::require_int(std::string_view key) const { return gguf_as_int(require(key), what(key)); }
float GgufFile::require_float(std::string_view key) const { return gguf_as_float(require(key), what(key)); }
bool GgufFile::require_bool(std::string_view key) const { return gguf_as_bool(require(key), what(key)); }
std::string GgufFile::require_string(std::string_view key) const { return gguf_as_string(require(key), what(key)); }
std::vector<std::string> GgufFile::require_string_array(std::string_view key) const {
  return gguf_as_string_array(require(key), what(key));
}
std::vector<int32_t> GgufFile::require_int_array(std::string_view key) const {
  return gguf_as_int_array(require(key), what(key));
}

const GgufTensor* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensor& GgufFile::require_tensor(std::string_view name,
                                           std::initializer_list<uint64_t> expected_shape) const {
  const GgufTensor* t = find_tensor(name);
  if (!t) throw Error(ErrorKind::BadModel, path_ + ": missing tensor '" + std::string(name) + "'");
  // Compare as 4-D shapes padded with 1s, so [64] matches [64, 1].
  uint64_t want[4] = {1, 1, 1, 1};
  bool ok = expected_shape.size() <= 4;
  size_t i = 0;
  for (uint64_t d : expected_shape) {
    if (i < 4) want[i] = d;
    ++i;
  }
  for (int j = 0; ok && j < 4; ++j) ok = want[j] == t->ne[j];
  if (!ok)
    throw Error(ErrorKind::BadModel, path_ + ": tensor '" + t->name + "' has shape " + t->shape_string() +
                                         ", expected " + shape_text(expected_shape.begin(), expected_shape.size()));
  return *t;
}

std::string GgufFile::describe() const {
  uint64_t data_bytes = 0;
  for (const GgufTensor& t : tensors_) data_bytes += t.nbytes;
  std::string s = path_ + ": GGUF v" + std::to_string(version_) + ", " + std::to_string(kvs_.size()) +
                  " metadata keys, " + std::to_string(tensors_.size()) + " tensors (" + std::to_string(data_bytes) +
                  " bytes of tensor data, alignment " + std::to_string(alignment_) + ")";
  const GgufValue* arch = find("general.architecture");
  if (arch && arch->type == GgufType::String) s += ", architecture '" + std::get<std::string>(arch->data) + "'";
  const GgufValue* name = find("general.name");
  if (name && name->type == GgufType::String) s += ", name '" + std::get<std::string>(name->data) + "'";
  return s;
}

}  // namespace snapvk
