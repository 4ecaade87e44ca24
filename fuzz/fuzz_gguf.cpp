// Fuzzes the GGUF reader and what reads a model file before any device is involved: the
// hyper-parameters, the tokenizer vocabulary (and a tokenizer built from it), and the weight
// tensors a model needs, and the chat template. Any input must end in success or a snapvk::Error: other exceptions,
// sanitizer reports and broken invariants are crashes.
#include <cstddef>
#include <cstdint>
#include <optional>

#include "fuzz/fuzz_common.h"
#include "host/gguf/ggml_types.h"
#include "host/gguf/gguf.h"
#include "host/model/chat_template.h"
#include "host/model/model.h"
#include "host/model/tokenizer.h"
#include "runtime/error.h"

using namespace snapvk;
using snapvk::fuzz::fail;

namespace {

// What the reader promises about every tensor it accepts.
void check_tensors(const GgufFile& f, const uint8_t* data, size_t size) {
  for (const GgufTensor& t : f.tensors()) {
    if (t.n_dims > 4) fail("tensor n_dims out of range", t.name);  // 0 is a scalar, as in ggml
    if (!t.data || t.data < data || t.nbytes > size || t.data + t.nbytes > data + size)
      fail("tensor data outside the file", t.name);
    if (t.data != data + f.data_offset() + t.offset) fail("tensor data pointer", t.name);
    const uint64_t rows = t.ne[1] * t.ne[2] * t.ne[3];
    if (traits_of(t.type).supported && t.nbytes != row_bytes(t.type, t.ne[0]) * rows) fail("tensor nbytes", t.name);
    (void)t.shape_string();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::optional<GgufFile> file;
  try {
    file.emplace(GgufFile::from_memory(data, size, "fuzz.gguf"));
  } catch (const Error&) {
    return 0;
  }
  const GgufFile& f = *file;
  // Without tensors the padding before the (empty) data section may be missing, as ggml allows.
  if ((!f.tensors().empty() && f.data_offset() > size) || f.data_offset() % f.alignment()) fail("data offset");
  check_tensors(f, data, size);
  (void)f.describe();
  for (const GgufKv& kv : f.metadata()) {
    if (f.find(kv.key) == nullptr) fail("key not found by find()", kv.key);
    (void)kv.value.type_string();
  }

  try {
    const ModelConfig c = ModelConfig::from_gguf(f);
    if (!c.n_head || !c.n_head_kv || c.n_head % c.n_head_kv || !c.head_dim || c.n_rot > c.head_dim)
      fail("accepted an inconsistent config");
    check_model_tensors(f, c);
  } catch (const Error&) {}

  try {
    Tokenizer tok(vocab_from_gguf(f));
    const auto ids = tok.encode("Hello world! 1234 <s> \xe2\x96\x81 caf\xc3\xa9 \xff", true, true);
    for (int32_t id : ids)
      if (id < 0 || id >= tok.n_vocab()) fail("encode gave an id out of range", std::to_string(id));
    (void)tok.decode(ids);
    for (int32_t id = 0; id < std::min(tok.n_vocab(), 300); ++id) (void)tok.token_to_piece(id, true);
    // The chat template: recognised or refused, then a conversation rendered and continued.
    const ChatTemplate t = ChatTemplate::for_model(f, tok);
    const std::vector<ChatMessage> msgs = {{"user", " Hi "}, {"assistant", " A "}, {"user", "Q"}};
    ChatHistory h;
    (void)h.next(t, std::span(msgs).first(1), true);
    h.generated(" A ");
    if (h.next(t, msgs, true).empty()) fail("a new turn rendered no text");
    (void)t.stop_tokens(tok);
  } catch (const Error&) {}
  return 0;
}
