#pragma once
// Tokenizer for Llama-family GGUF vocabularies, matching llama.cpp (src/llama-vocab.cpp):
//   * "llama": SentencePiece BPE (llm_tokenizer_spm): spaces escaped to U+2581, a space
//     prefix, bigram merges by score, byte fallback to <0xNN> tokens;
//   * "gpt2": byte-level BPE (llm_tokenizer_bpe): pre-tokenizer split by tokenizer.ggml.pre
//     (host/model/pretokenizer.h), GPT-2 byte-to-unicode mapping, merges by rank.
// Control and user-defined tokens written literally in the text are split out first
// (llama.cpp's tokenizer_st_partition). Token ids are int32_t, as llama_token.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace snapvk {

class GgufFile;

// tokenizer.ggml.token_type values.
enum class TokenType : int32_t {
  Undefined = 0,
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6
};

// What a GGUF's tokenizer.ggml.* keys hold. vocab_defaults() fills in what llama.cpp assumes
// when a key is missing; the Tokenizer takes the struct as it is.
struct Vocab {
  std::string model;                                         // "llama" (SentencePiece) or "gpt2" (byte-level BPE)
  std::string pre = "default";                               // tokenizer.ggml.pre
  std::vector<std::string> tokens;                           // tokenizer.ggml.tokens
  std::vector<float> scores;                                 // tokenizer.ggml.scores (may be empty: all 0)
  std::vector<int32_t> types;                                // tokenizer.ggml.token_type (may be empty: all normal)
  std::vector<std::string> merges;                           // tokenizer.ggml.merges ("a b"), gpt2 only
  int32_t bos = -1, eos = -1, eot = -1, unk = -1, pad = -1;  // -1: none
  bool add_bos = false;                                      // encode(add_special=true) prepends bos
  bool add_eos = false;                                      // ... and appends eos
  bool add_space_prefix = true;  // SPM only: a space before the text (and after special tokens)
};

// A Vocab with llama.cpp's defaults for the model: for "llama" bos 1, eos 2, unk 0, add_bos,
// add_space_prefix; for "gpt2" bos = eos = 11 (sic, llama.cpp's), add_bos only for the
// Llama-3 pre-tokenizers, no space prefix.
Vocab vocab_defaults(std::string model, std::string pre = "default");

// Reads tokenizer.ggml.* from a GGUF, on top of vocab_defaults(). Special-token ids that are
// out of range (e.g. 0xFFFFFFFF padding ids) are ignored, as llama.cpp does.
Vocab vocab_from_gguf(const GgufFile& file);

class Tokenizer {
 public:
  // Throws snapvk::Error for a vocabulary it cannot use (unknown model or pre-tokenizer,
  // duplicate tokens, array sizes that disagree, add_bos without a bos id, ...).
  explicit Tokenizer(Vocab vocab);

  // Token ids of `text`, as llama_tokenize(text, add_special, parse_special).
  // add_special: BOS/EOS per add_bos/add_eos. parse_special: control tokens written in the
  // text ("<s>", "<|eot_id|>") become those tokens; user-defined tokens always do.
  // Invalid UTF-8 never fails: SPM falls back to byte tokens (a truncated sequence may take in
  // bytes of an escaped space, as in llama.cpp), BPE sees each bad byte as U+FFFD.
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special = false) const;

  // The text of one token, as llama_token_to_piece(id, lstrip = 0, special): U+2581 becomes a
  // space (SPM), <0xNN> becomes that byte, byte-level BPE characters become their bytes.
  // Control and unknown tokens give "" unless `special`; user-defined tokens are always text.
  // Throws snapvk::Error for an id outside [0, n_vocab).
  std::string token_to_piece(int32_t id, bool special = false) const;

  // The concatenation of token_to_piece(id) over ids; nothing else. Unlike llama_detokenize
  // it neither drops the leading space of an SPM text (so decode(encode(x)) == " " + x for
  // SPM with a space prefix) nor applies BPE's clean_up_tokenization_spaces. Callers that
  // print a stream of tokens should strip the first space themselves if they want to.
  // Throws snapvk::Error naming the first id outside [0, n_vocab).
  std::string decode(const std::vector<int32_t>& ids) const;

  // Per token of `ids`: 1 where it continues the word or number of the token before it (its text
  // starts with a letter or digit and the text before ends with one; a piece of a UTF-8 character
  // counts as a letter), else 0. "99360" written digit by digit is one word. What SnapKV's word
  // completion keeps together (KvPolicyOptions::complete_words).
  std::vector<uint32_t> word_continuations(std::span<const int32_t> ids) const;

  int32_t n_vocab() const;
  int32_t bos() const;  // -1 when the vocab has none
  int32_t eos() const;
  // End of generation: eos, eot, and the tokens llama.cpp ends generation at by their text, among
  // them every chat template's end of turn (<|im_end|>, <|eot_id|>, <end_of_turn>, <|end|>).
  bool is_eog(int32_t id) const;
  std::vector<int32_t> eog_tokens() const;  // every id is_eog() is true for, ascending
  // The id of the token whose text is exactly `text`, or -1.
  int32_t find_token(std::string_view text) const;
  bool is_control(int32_t id) const;
  bool add_bos() const;
  // The vocabulary as used: empty token texts renamed "[EMPTY_<id>]" and ids outside the
  // vocabulary set to -1 (as llama.cpp), eot found by its text when none was given.
  const Vocab& vocab() const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;  // immutable, so copies share it
};

}  // namespace snapvk
