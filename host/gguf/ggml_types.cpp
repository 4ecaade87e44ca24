#include "host/gguf/ggml_types.h"

#include <array>
#include <string>

#include "runtime/error.h"

namespace snapvk {

namespace {

// Indexed by the on-disk id. Block geometry follows ggml's block_* structs (ggml-common.h);
// an entry with a null name is an id ggml has removed, which GGUF readers must reject.
constexpr uint32_t kMaxId = 41;
constexpr std::array<TypeTraits, kMaxId + 1> kTraits = {{
    {"f32", 1, 4, true},          // 0
    {"f16", 1, 2, true},          // 1
    {"q4_0", 32, 18, true},       // 2
    {"q4_1", 32, 20, true},       // 3
    {nullptr, 0, 0, false},       // 4  (Q4_2, removed)
    {nullptr, 0, 0, false},       // 5  (Q4_3, removed)
    {"q5_0", 32, 22, true},       // 6
    {"q5_1", 32, 24, true},       // 7
    {"q8_0", 32, 34, true},       // 8
    {"q8_1", 32, 36, false},      // 9
    {"q2_K", 256, 84, true},      // 10
    {"q3_K", 256, 110, true},     // 11
    {"q4_K", 256, 144, true},     // 12
    {"q5_K", 256, 176, true},     // 13
    {"q6_K", 256, 210, true},     // 14
    {"q8_K", 256, 292, false},    // 15
    {"iq2_xxs", 256, 66, false},  // 16
    {"iq2_xs", 256, 74, false},   // 17
    {"iq3_xxs", 256, 98, false},  // 18
    {"iq1_s", 256, 50, false},    // 19
    {"iq4_nl", 32, 18, true},     // 20
    {"iq3_s", 256, 110, false},   // 21
    {"iq2_s", 256, 82, false},    // 22
    {"iq4_xs", 256, 136, true},   // 23
    {"i8", 1, 1, false},          // 24
    {"i16", 1, 2, false},         // 25
    {"i32", 1, 4, false},         // 26
    {"i64", 1, 8, false},         // 27
    {"f64", 1, 8, false},         // 28
    {"iq1_m", 256, 56, false},    // 29
    {"bf16", 1, 2, true},         // 30
    {nullptr, 0, 0, false},       // 31 (Q4_0_4_4, removed)
    {nullptr, 0, 0, false},       // 32 (Q4_0_4_8, removed)
    {nullptr, 0, 0, false},       // 33 (Q4_0_8_8, removed)
    {"tq1_0", 256, 54, false},    // 34
    {"tq2_0", 256, 66, false},    // 35
    {nullptr, 0, 0, false},       // 36 (IQ4_NL_4_4, removed)
    {nullptr, 0, 0, false},       // 37 (IQ4_NL_4_8, removed)
    {nullptr, 0, 0, false},       // 38 (IQ4_NL_8_8, removed)
    {"mxfp4", 32, 17, false},     // 39
    {"nvfp4", 64, 36, false},     // 40
    {"q1_0", 128, 18, false},     // 41
}};

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

}  // namespace

const TypeTraits* type_traits(uint32_t raw) {
  if (raw > kMaxId || kTraits[raw].name == nullptr) return nullptr;
  return &kTraits[raw];
}

const TypeTraits& traits_of(GgmlType type) {
  const TypeTraits* t = type_traits(static_cast<uint32_t>(type));
  if (!t) throw Error(ErrorKind::BadModel, "unknown ggml type id " + std::to_string(static_cast<uint32_t>(type)));
  return *t;
}

const char* type_name(GgmlType type) {
  const TypeTraits* t = type_traits(static_cast<uint32_t>(type));
  return t ? t->name : "unknown";
}

uint64_t row_bytes(GgmlType type, uint64_t n) {
  const TypeTraits& t = traits_of(type);
  if (n % t.block_size != 0)
    throw Error(ErrorKind::BadModel, std::string("row of ") + std::to_string(n) +
                                         " elements is not a multiple of the " + t.name + " block size " +
                                         std::to_string(t.block_size));
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(n / t.block_size, uint64_t{t.type_size}, &bytes))
    throw Error(ErrorKind::BadModel, std::string("row of ") + std::to_string(n) + " " + t.name + " elements overflows");
  return bytes;
}

const std::string& supported_type_names() {
  static const std::string names = [] {
    std::string s;
    for (const TypeTraits& t : kTraits)
      if (t.supported) s += (s.empty() ? "" : ", ") + std::string(t.name);
    return s;
  }();
  return names;
}

std::optional<GgmlType> parse_type(std::string_view name) {
  for (uint32_t id = 0; id <= kMaxId; ++id)
    if (kTraits[id].name && iequals(name, kTraits[id].name)) return static_cast<GgmlType>(id);
  return std::nullopt;
}

}  // namespace snapvk
