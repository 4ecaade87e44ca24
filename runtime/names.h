#pragma once
// Enumerations that users spell by name (on the command line, in JSON, in files): one list of
// (name, value) pairs per enum, in the order of its C API enum, so that a list's index is the
// C value. Parsing, printing and the "(a, b, c)" of error messages all read that one list.
#include <cctype>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace snapvk {

template <class E>
struct Named {
  const char* name;
  E value;
};

// The name of `v` in `list` ("?" when absent).
template <class E>
constexpr const char* name_in(std::span<const Named<E>> list, E v) {
  for (const Named<E>& n : list)
    if (n.value == v) return n.name;
  return "?";
}

// The value named `s` (case-insensitive), or nothing.
template <class E>
std::optional<E> parse_in(std::span<const Named<E>> list, std::string_view s) {
  for (const Named<E>& n : list) {
    const std::string_view name = n.name;
    if (name.size() != s.size()) continue;
    bool same = true;
    for (size_t i = 0; i < s.size() && same; ++i) same = std::tolower(static_cast<unsigned char>(s[i])) == name[i];
    if (same) return n.value;
  }
  return std::nullopt;
}

// "a, b, c": the choices, for help texts and error messages.
template <class E>
std::string names_of(std::span<const Named<E>> list, const char* sep = ", ") {
  std::string out;
  for (const Named<E>& n : list) out += (out.empty() ? "" : sep) + std::string(n.name);
  return out;
}

}  // namespace snapvk
