// Fuzzes the tokenizers on the fixture vocabularies (SentencePiece: llama-spm and stories260K;
// byte-level BPE: gpt-2). The first byte picks the vocabulary and the flags, the rest is the
// text. Checks: ids in range, decoding never fails, and for valid UTF-8 without special-token
// parsing, decode(encode(text)) gives the text back (after SentencePiece's space prefix;
// SentencePiece texts holding its own space mark U+2581 excepted).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_common.h"
#include "host/gguf/gguf.h"
#include "host/model/tokenizer.h"
#include "host/model/unicode.h"
#include "runtime/error.h"

using namespace snapvk;

namespace {

std::vector<std::unique_ptr<Tokenizer>> g_tok;

bool valid_utf8(std::string_view s) {
  for (size_t i = 0, n = 0; i < s.size(); i += n)
    if (!(n = unicode::utf8_valid_len(s, i))) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  for (const char* name : {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf", "stories260K.gguf"}) {
    const std::string path = (fuzz::models_dir() / name).string();
    try {
      g_tok.push_back(std::make_unique<Tokenizer>(vocab_from_gguf(GgufFile::open(path))));
    } catch (const std::exception& e) {
      fuzz::fail("cannot load a fixture vocabulary (set SNAPVK_TEST_MODELS)", e.what());
    }
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t sel = data[0];
  const Tokenizer& tok = *g_tok[sel % g_tok.size()];
  const bool add_special = sel & 0x10, parse_special = sel & 0x20;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  const std::vector<int32_t> ids = tok.encode(text, add_special, parse_special);
  for (int32_t id : ids)
    if (id < 0 || id >= tok.n_vocab()) fuzz::fail("id out of range", std::to_string(id));
  const std::string back = tok.decode(ids);
  for (int32_t id : ids) (void)tok.token_to_piece(id, true);

  const bool spm = tok.vocab().model == "llama";
  // SentencePiece writes spaces as U+2581 and decodes U+2581 as a space: a text holding U+2581
  // itself comes back with a space there (as in llama.cpp and sentencepiece).
  const bool has_escape = spm && text.find("\xe2\x96\x81") != std::string_view::npos;
  if (!add_special && !parse_special && !has_escape && valid_utf8(text)) {
    const std::string want = (spm && tok.vocab().add_space_prefix && !text.empty() ? " " : "") + std::string(text);
    if (back != want) fuzz::fail("decode(encode(text)) != text", "'" + back + "' vs '" + want + "'");
  }
  return 0;
}
