#pragma once
// Texts built into snapvk (data/texts/*.txt, embedded by cmake/EmbedTexts.cmake): what the
// fidelity suite measures perplexity on, so that it needs no download and no file beside it.
#include <string_view>
#include <vector>

namespace snapvk {

struct ShippedText {
  std::string_view name;  // the file name without .txt
  std::string_view text;
};
const std::vector<ShippedText>& shipped_texts();

}  // namespace snapvk
