#pragma once
// Chat templates: a conversation (role, content messages) as the prompt text an instruct model
// was trained on. Like llama.cpp's built-in templates (src/llama-chat.cpp), these are not a Jinja
// engine: the GGUF's tokenizer.chat_template text is recognised by the markers it contains
// (llm_chat_detect_template) and each family is rendered by code, byte for byte as llama.cpp's
// llm_chat_apply_template renders it. Families: ChatML (Qwen, SmolLM), Llama 3, Gemma,
// [INST] (Llama 2 and Mistral, with llama.cpp's variants) and Phi-3.
//
// One addition to llama.cpp: a default system message that the template text states literally
// (SmolLM2's "You are a helpful AI assistant named SmolLM, ...", Qwen2.5's "You are Qwen, ...")
// is rendered when the conversation does not begin with a system message, as the Jinja template
// would.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace snapvk {

class GgufFile;
class Tokenizer;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (others are rendered as the family does)
  std::string content;
  bool operator==(const ChatMessage&) const = default;
};

enum class ChatFormat {
  ChatML,
  Llama3,
  Gemma,
  Phi3,
  Llama2,          // [INST] without <<SYS>>: a system message is written before the first user's text
  Llama2Sys,       // [INST] <<SYS>>\n...\n<</SYS>>\n\n
  Llama2SysBos,    // ... and <s> before each later [INST]
  Llama2SysStrip,  // ... with message contents trimmed
  MistralV1,       // " [INST] ", Mistral's official v1 template
  MistralV3,
  MistralV3Tekken,
  MistralV7,  // [SYSTEM_PROMPT] ... [/SYSTEM_PROMPT]
  MistralV7Tekken,
};

// llama.cpp's name of the format ("chatml", "llama3", "gemma", "phi3", "llama2", "llama2-sys", ...).
const char* chat_format_name(ChatFormat f);
// A format by name: llama.cpp's names, and "mistral" for "llama2".
std::optional<ChatFormat> chat_format_from_name(std::string_view name);
// "chatml, llama3, gemma, mistral (alias llama2), phi3, and the [INST] variants llama2-sys, ...":
// for error messages and --help.
std::string chat_format_names();

class ChatTemplate {
 public:
  explicit ChatTemplate(ChatFormat format, std::string default_system = {}, std::string source = {});

  // Recognises a Jinja template text (or a format name) as llama.cpp does, and finds its literal
  // default system message. Throws snapvk::Error (one line listing the names) when the text is no
  // family snapvk renders.
  static ChatTemplate from_text(std::string_view jinja);
  // The template by name (chat_format_from_name); the default system message is still taken from
  // `jinja` (the GGUF's template) when it states one in this format's markers. Throws
  // snapvk::Error for an unknown name.
  static ChatTemplate from_name(std::string_view name, std::string_view jinja = {});
  // The model's template: `override_name` when given, else the GGUF's tokenizer.chat_template,
  // else one chosen from the vocabulary's special tokens (<start_of_turn>: Gemma; otherwise
  // ChatML). source() says which; the choice is logged at info level.
  static ChatTemplate for_model(const GgufFile& file, const Tokenizer& tok, std::string_view override_name = {});

  ChatFormat format() const { return format_; }
  const char* name() const { return chat_format_name(format_); }
  // The default system message ("" when the template states none).
  const std::string& default_system() const { return default_system_; }
  // Where the template came from: "tokenizer.chat_template", "--chat-template", "vocabulary
  // (<start_of_turn>)", ...
  const std::string& source() const { return source_; }

  // The conversation as prompt text, with the assistant's opening when add_assistant (the
  // generation prompt). Special tokens are written as text: tokenize with parse_special, and
  // with add_special (BOS as the vocabulary asks) for the start of a conversation.
  std::string render(std::span<const ChatMessage> messages, bool add_assistant) const;
  // The text that ends a turn ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>").
  const char* end_of_turn() const;
  // The vocabulary's tokens that end an answer under this template: its end of turn when the
  // vocabulary has it as one token, eos and eot. Generation stops at these (GenerateOptions::stop_tokens)
  // besides the vocabulary's own end-of-generation tokens.
  std::vector<int32_t> stop_tokens(const Tokenizer& tok) const;

 private:
  ChatFormat format_;
  std::string default_system_;
  std::string source_;
};

// The default system message a Jinja template states literally in `format`'s system turn (the
// text between the turn's opening and its end inside one string literal or raw text), or "".
std::string find_default_system(std::string_view jinja, ChatFormat format);

// What a session's cache holds of a conversation, so that a new turn appends only its own text
// (the prompt is not prefilled again). Pure text: the caller tokenizes what next() returns and
// prefills it, and reports the generated answer with generated().
class ChatHistory {
 public:
  // The text to append for `messages`: the whole conversation so far, beginning with the
  // messages already held (an answer generated since may be given as any assistant message,
  // e.g. the text as generated). With add_assistant, the assistant's opening ends it. Throws
  // snapvk::Error when `messages` do not continue the conversation held; nothing changes then.
  std::string next(const ChatTemplate& t, std::span<const ChatMessage> messages, bool add_assistant);
  // Text the model generated into the cache after the last next().
  void generated(std::string_view text);
  // The cache received tokens that are not part of the conversation (a plain prompt): next()
  // fails until clear().
  void invalidate();
  void clear();
  bool empty() const { return messages_.empty() && text_.empty(); }
  bool active() const { return !messages_.empty() && !invalid_; }  // a conversation is held
  const std::vector<ChatMessage>& messages() const { return messages_; }
  const std::string& text() const { return text_; }  // the text the cache holds

 private:
  std::vector<ChatMessage> messages_;  // the messages held
  std::string text_;                   // their rendering, then what was generated
  bool answer_ = false;                // generated text follows the messages
  bool invalid_ = false;
};

}  // namespace snapvk
