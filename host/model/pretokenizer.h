#pragma once
// Pre-tokenizers of byte-level BPE vocabularies: split text into the words that BPE merges
// run inside, as llama.cpp does for each `tokenizer.ggml.pre`. No std::regex: every pattern
// is a hand-written scanner over code points, equivalent to llama.cpp's custom splitters
// (unicode_regex_split_custom_gpt2 / _llama3) and to the std::regex patterns it falls back to.
#include <string>
#include <string_view>
#include <vector>

namespace snapvk {

enum class PreTokenizer {
  // llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEFAULT for BPE: the chain
  //   [\p{P}\$\+<=>\^~\|]+  then the GPT-2 pattern  then \p{N}+  then [0-9][0-9][0-9]
  Default,
  // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Gpt2,
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*
  //   |\s*[\r\n]+|\s+(?!\S)|\s+
  Llama3,
  // The Llama-3 pattern with \p{N} (single digits) in place of \p{N}{1,3}.
  Qwen2,
  // \p{N} (each digit alone), then the GPT-2 pattern (starcoder, refact, command-r, smollm, ...).
  StarCoder,
};

// The pre-tokenizer for a `tokenizer.ggml.pre` value ("" counts as "default"), and whether
// that pre-tokenizer also sets llama.cpp's ignore_merges (a word that is a whole token is
// emitted without merging). Throws snapvk::Error for a value it does not know.
struct PreTokenizerInfo {
  PreTokenizer kind;
  bool ignore_merges;
};
PreTokenizerInfo pre_tokenizer_for(std::string_view pre);

// The words of `text` (UTF-8, not yet byte-encoded). Invalid UTF-8 bytes come out as U+FFFD,
// as in llama.cpp, so the words concatenate to the input exactly when it is valid UTF-8.
std::vector<std::string> pre_tokenize(std::string_view text, PreTokenizer kind);

}  // namespace snapvk
