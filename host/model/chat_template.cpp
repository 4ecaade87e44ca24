#include "host/model/chat_template.h"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "host/gguf/gguf.h"
#include "host/model/tokenizer.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace snapvk {

namespace {

struct FormatName {
  ChatFormat format;
  const char* name;
};
constexpr FormatName kNames[] = {
    {ChatFormat::ChatML, "chatml"},
    {ChatFormat::Llama3, "llama3"},
    {ChatFormat::Gemma, "gemma"},
    {ChatFormat::Phi3, "phi3"},
    {ChatFormat::Llama2, "llama2"},
    {ChatFormat::Llama2Sys, "llama2-sys"},
    {ChatFormat::Llama2SysBos, "llama2-sys-bos"},
    {ChatFormat::Llama2SysStrip, "llama2-sys-strip"},
    {ChatFormat::MistralV1, "mistral-v1"},
    {ChatFormat::MistralV3, "mistral-v3"},
    {ChatFormat::MistralV3Tekken, "mistral-v3-tekken"},
    {ChatFormat::MistralV7, "mistral-v7"},
    {ChatFormat::MistralV7Tekken, "mistral-v7-tekken"},
};

// llama.cpp's trim(): ASCII white space (isspace) at both ends.
std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

// A family snapvk renders, or the name llama.cpp gives a family it does not.
struct Detected {
  std::optional<ChatFormat> format;
  const char* other = nullptr;
};

// The [INST] family's variant, as llm_chat_detect_template tells them apart.
ChatFormat detect_inst(std::string_view t) {
  auto has = [&](std::string_view s) { return t.find(s) != std::string_view::npos; };
  if (has("[SYSTEM_PROMPT]")) return ChatFormat::MistralV7;
  if (has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]")) {
    if (has(" [INST]")) return ChatFormat::MistralV1;
    if (has("\"[INST]\"")) return ChatFormat::MistralV3Tekken;
    return ChatFormat::MistralV3;
  }
  if (has("content.strip()")) return ChatFormat::Llama2SysStrip;
  if (has("bos_token + '[INST]")) return ChatFormat::Llama2SysBos;
  if (has("<<SYS>>")) return ChatFormat::Llama2Sys;
  return ChatFormat::Llama2;
}

// llm_chat_detect_template, in its order, down to the last family snapvk renders (Llama 3): a
// text that llama.cpp takes for another family first is not taken for one of ours.
Detected detect(std::string_view t) {
  if (auto f = chat_format_from_name(t)) return {f};
  auto has = [&](std::string_view s) { return t.find(s) != std::string_view::npos; };
  if (has("<|im_start|>")) {
    if (has("<|im_sep|>")) return {{}, "phi4"};
    if (has("<end_of_utterance>")) return {{}, "smolvlm"};
    return {ChatFormat::ChatML};
  }
  if (t.starts_with("mistral") || has("[INST]")) return {detect_inst(t)};
  if (has("<|assistant|>") && has("<|end|>")) return {ChatFormat::Phi3};
  if (has("[gMASK]<sop>")) return {{}, "chatglm4"};
  if (has("<|assistant|>") && has("<|user|>")) return {{}, has("</s>") ? "falcon3" : "glmedge"};
  if (has("<|{{ item['role'] }}|>") && has("<|begin_of_image|>")) return {{}, "glmedge"};
  if (has("<|user|>") && has("<|endoftext|>")) return {{}, "zephyr"};
  if (has("bos_token + message['role']")) return {{}, "monarch"};
  if (has("<start_of_turn>")) return {ChatFormat::Gemma};
  if (has("'\\n\\nAssistant: ' + eos_token")) return {{}, "orion"};
  if (has("GPT4 Correct ")) return {{}, "openchat"};
  if (has("USER: ") && has("ASSISTANT: ")) return {{}, has("SYSTEM: ") ? "vicuna-orca" : "vicuna"};
  if (has("### Instruction:") && has("<|EOT|>")) return {{}, "deepseek"};
  if (has("<|START_OF_TURN_TOKEN|>") && has("<|USER_TOKEN|>")) return {{}, "command-r"};
  if (has("<|start_header_id|>") && has("<|end_header_id|>")) return {ChatFormat::Llama3};
  return {};
}

// ---- rendering: each as llama.cpp's llm_chat_apply_template ----------------------------------

void render_chatml(std::ostringstream& ss, std::span<const ChatMessage> msgs, bool add_ass) {
  for (const ChatMessage& m : msgs) ss << "<|im_start|>" << m.role << "\n" << m.content << "<|im_end|>\n";
  if (add_ass) ss << "<|im_start|>assistant\n";
}

void render_llama3(std::ostringstream& ss, std::span<const ChatMessage> msgs, bool add_ass) {
  for (const ChatMessage& m : msgs)
    ss << "<|start_header_id|>" << m.role << "<|end_header_id|>\n\n" << trim(m.content) << "<|eot_id|>";
  if (add_ass) ss << "<|start_header_id|>assistant<|end_header_id|>\n\n";
}

// Gemma has no system turn: system messages go before the next user message's text.
void render_gemma(std::ostringstream& ss, std::span<const ChatMessage> msgs, bool add_ass) {
  std::string system;
  for (const ChatMessage& m : msgs) {
    if (m.role == "system") {
      system += trim(m.content);
      continue;
    }
    const std::string role = m.role == "assistant" ? "model" : m.role;
    ss << "<start_of_turn>" << role << "\n";
    if (!system.empty() && role != "model") {
      ss << system << "\n\n";
      system.clear();
    }
    ss << trim(m.content) << "<end_of_turn>\n";
  }
  if (add_ass) ss << "<start_of_turn>model\n";
}

void render_phi3(std::ostringstream& ss, std::span<const ChatMessage> msgs, bool add_ass) {
  for (const ChatMessage& m : msgs) ss << "<|" << m.role << "|>\n" << m.content << "<|end|>\n";
  if (add_ass) ss << "<|assistant|>\n";
}

void render_mistral_v7(std::ostringstream& ss, std::span<const ChatMessage> msgs, bool tekken) {
  const char* space = tekken ? "" : " ";
  for (const ChatMessage& m : msgs) {
    if (m.role == "system")
      ss << "[SYSTEM_PROMPT]" << space << m.content << "[/SYSTEM_PROMPT]";
    else if (m.role == "user")
      ss << "[INST]" << space << m.content << "[/INST]";
    else
      ss << space << m.content << "</s>";
  }
}

void render_mistral_v1_v3(std::ostringstream& ss, std::span<const ChatMessage> msgs, ChatFormat f) {
  const char* leading = f == ChatFormat::MistralV1 ? " " : "";
  const char* trailing = f == ChatFormat::MistralV3Tekken ? "" : " ";
  const bool trim_answer = f == ChatFormat::MistralV3;
  bool in_turn = false;
  for (const ChatMessage& m : msgs) {
    if (!in_turn) {
      ss << leading << "[INST]" << trailing;
      in_turn = true;
    }
    if (m.role == "system") {
      ss << m.content << "\n\n";
    } else if (m.role == "user") {
      ss << m.content << leading << "[/INST]";
    } else {
      ss << trailing << (trim_answer ? trim(m.content) : m.content) << "</s>";
      in_turn = false;
    }
  }
}

void render_llama2(std::ostringstream& ss, std::span<const ChatMessage> msgs, ChatFormat f) {
  const bool sys = f != ChatFormat::Llama2, bos = f == ChatFormat::Llama2SysBos,
             strip = f == ChatFormat::Llama2SysStrip;
  bool in_turn = true;  // the first [INST] has no <s>
  ss << "[INST] ";
  for (const ChatMessage& m : msgs) {
    const std::string content = strip ? trim(m.content) : m.content;
    if (!in_turn) {
      in_turn = true;
      ss << (bos ? "<s>[INST] " : "[INST] ");
    }
    if (m.role == "system") {
      if (sys)
        ss << "<<SYS>>\n" << content << "\n<</SYS>>\n\n";
      else
        ss << content << "\n";
    } else if (m.role == "user") {
      ss << content << " [/INST]";
    } else {
      ss << content << "</s>";
      in_turn = false;
    }
  }
}

// The opening and the end of a system turn in a format's text, for finding a default system
// message; {} for formats without a system turn of their own.
std::pair<std::string_view, std::string_view> system_markers(ChatFormat f) {
  switch (f) {
    case ChatFormat::ChatML: return {"<|im_start|>system\n", "<|im_end|>"};
    case ChatFormat::Llama3: return {"<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>"};
    case ChatFormat::Phi3: return {"<|system|>\n", "<|end|>"};
    case ChatFormat::Llama2Sys:
    case ChatFormat::Llama2SysBos:
    case ChatFormat::Llama2SysStrip: return {"<<SYS>>\n", "\n<</SYS>>"};
    case ChatFormat::MistralV7: return {"[SYSTEM_PROMPT] ", "[/SYSTEM_PROMPT]"};
    case ChatFormat::MistralV7Tekken: return {"[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"};
    default: return {};
  }
}

// A quoted Jinja string literal from t[i] (the quote), unescaped; i ends after the closing quote.
std::string jinja_literal(std::string_view t, size_t& i) {
  const char quote = t[i++];
  std::string s;
  for (; i < t.size() && t[i] != quote; ++i) {
    if (t[i] != '\\' || i + 1 == t.size()) {
      s += t[i];
      continue;
    }
    const char c = t[++i];
    s += c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
  }
  ++i;
  return s;
}

// The texts a Jinja template may output as they stand: its raw text between tags, and the
// string literals inside {{ }} and {% %} (comments skipped).
std::vector<std::string> jinja_texts(std::string_view t) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < t.size()) {
    size_t tag = i;
    while (tag + 1 < t.size() && !(t[tag] == '{' && (t[tag + 1] == '{' || t[tag + 1] == '%' || t[tag + 1] == '#')))
      ++tag;
    if (tag + 1 >= t.size()) tag = t.size();
    if (tag > i) out.emplace_back(t.substr(i, tag - i));
    if (tag == t.size()) break;
    const char kind = t[tag + 1];
    const std::string_view close = kind == '#' ? "#}" : kind == '{' ? "}}" : "%}";
    i = tag + 2;
    while (i < t.size() && t.compare(i, 2, close) != 0) {
      if (kind != '#' && (t[i] == '\'' || t[i] == '"'))
        out.push_back(jinja_literal(t, i));
      else
        ++i;
    }
    i = std::min(t.size(), i + 2);
  }
  return out;
}

}  // namespace

const char* chat_format_name(ChatFormat f) {
  for (const FormatName& n : kNames)
    if (n.format == f) return n.name;
  return "?";
}

std::optional<ChatFormat> chat_format_from_name(std::string_view name) {
  if (name == "mistral") return ChatFormat::Llama2;
  for (const FormatName& n : kNames)
    if (name == n.name) return n.format;
  return std::nullopt;
}

std::string chat_format_names() {
  return "chatml, llama3, gemma, mistral (alias llama2), phi3, and the [INST] variants llama2-sys, llama2-sys-bos, "
         "llama2-sys-strip, mistral-v1, mistral-v3, mistral-v3-tekken, mistral-v7, mistral-v7-tekken";
}

std::string find_default_system(std::string_view jinja, ChatFormat format) {
  const auto [open, end] = system_markers(format);
  if (open.empty()) return {};
  for (const std::string& s : jinja_texts(jinja)) {
    const size_t at = s.find(open);
    if (at == std::string::npos) continue;
    const size_t from = at + open.size(), to = s.find(end, from);
    if (to != std::string::npos && to > from) return s.substr(from, to - from);
  }
  return {};
}

ChatTemplate::ChatTemplate(ChatFormat format, std::string default_system, std::string source)
    : format_(format), default_system_(std::move(default_system)), source_(std::move(source)) {}

ChatTemplate ChatTemplate::from_text(std::string_view jinja) {
  const Detected d = detect(jinja);
  if (!d.format) {
    const std::string what = d.other
                                 ? std::string("llama.cpp's '") + d.other + "' template, which snapvk does not render"
                                 : std::string("not a chat template snapvk recognises");
    throw Error(ErrorKind::InvalidArgument, "the chat template is " + what +
                                                "; choose one with --chat-template NAME (" + chat_format_names() + ")");
  }
  return ChatTemplate(*d.format, find_default_system(jinja, *d.format), "tokenizer.chat_template");
}

ChatTemplate ChatTemplate::from_name(std::string_view name, std::string_view jinja) {
  const auto f = chat_format_from_name(name);
  if (!f)
    throw Error(ErrorKind::InvalidArgument,
                "unknown chat template '" + std::string(name) + "' (names: " + chat_format_names() + ")");
  return ChatTemplate(*f, find_default_system(jinja, *f), "chosen by name");
}

ChatTemplate ChatTemplate::for_model(const GgufFile& file, const Tokenizer& tok, std::string_view override_name) {
  const std::string jinja = file.get_string("tokenizer.chat_template", "");
  auto chosen = [&]() -> ChatTemplate {
    if (!override_name.empty()) return from_name(override_name, jinja);
    if (!jinja.empty()) return from_text(jinja);
    if (tok.find_token("<start_of_turn>") >= 0)
      return ChatTemplate(ChatFormat::Gemma, {}, "no tokenizer.chat_template; the vocabulary has <start_of_turn>");
    if (tok.find_token("<|im_start|>") >= 0)
      return ChatTemplate(ChatFormat::ChatML, {}, "no tokenizer.chat_template; the vocabulary has <|im_start|>");
    return ChatTemplate(ChatFormat::ChatML, {}, "no tokenizer.chat_template; ChatML by default");
  }();
  log().info("chat template: {} ({}){}", chosen.name(), chosen.source(),
             chosen.default_system().empty() ? "" : ", with a default system message");
  return chosen;
}

std::string ChatTemplate::render(std::span<const ChatMessage> messages, bool add_assistant) const {
  std::vector<ChatMessage> with_default;
  if (!default_system_.empty() && !messages.empty() && messages[0].role != "system") {
    with_default.push_back({"system", default_system_});
    with_default.insert(with_default.end(), messages.begin(), messages.end());
    messages = with_default;
  }
  std::ostringstream ss;
  switch (format_) {
    case ChatFormat::ChatML: render_chatml(ss, messages, add_assistant); break;
    case ChatFormat::Llama3: render_llama3(ss, messages, add_assistant); break;
    case ChatFormat::Gemma: render_gemma(ss, messages, add_assistant); break;
    case ChatFormat::Phi3: render_phi3(ss, messages, add_assistant); break;
    case ChatFormat::MistralV7:
    case ChatFormat::MistralV7Tekken: render_mistral_v7(ss, messages, format_ == ChatFormat::MistralV7Tekken); break;
    case ChatFormat::MistralV1:
    case ChatFormat::MistralV3:
    case ChatFormat::MistralV3Tekken: render_mistral_v1_v3(ss, messages, format_); break;
    default: render_llama2(ss, messages, format_); break;  // the [INST] family adds no generation prompt
  }
  return ss.str();
}

const char* ChatTemplate::end_of_turn() const {
  switch (format_) {
    case ChatFormat::ChatML: return "<|im_end|>";
    case ChatFormat::Llama3: return "<|eot_id|>";
    case ChatFormat::Gemma: return "<end_of_turn>";
    case ChatFormat::Phi3: return "<|end|>";
    default: return "</s>";
  }
}

std::vector<int32_t> ChatTemplate::stop_tokens(const Tokenizer& tok) const {
  std::vector<int32_t> ids;
  for (int32_t id : {tok.find_token(end_of_turn()), tok.eos(), tok.vocab().eot})
    if (id >= 0 && std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  return ids;
}

// ---- ChatHistory -------------------------------------------------------------------------------

namespace {

// After a generated answer whose text the rendering does not continue (a template that trims
// answers, or an answer the caller edited): the end of the answer's turn as the template writes it,
// then everything after the held messages (`held` ends with the answer).
std::string after_answer(const ChatTemplate& t, std::span<const ChatMessage> held, const std::string& full) {
  static const std::string kMark = "\x1f\x1e";  // no white space: no template trims it
  std::vector<ChatMessage> probe(held.begin(), held.end());
  probe.back().content = kMark;
  const std::string with_mark = t.render(probe, false);
  const size_t at = with_mark.rfind(kMark);
  const std::string closing = at == std::string::npos ? std::string() : with_mark.substr(at + kMark.size());
  const std::string held_text = t.render(held, false);
  if (!full.starts_with(held_text))
    throw Error(ErrorKind::InvalidArgument,
                "the conversation's rendering does not continue the text the session holds: reset the session");
  return closing + full.substr(held_text.size());
}

}  // namespace

std::string ChatHistory::next(const ChatTemplate& t, std::span<const ChatMessage> messages, bool add_assistant) {
  if (invalid_)
    throw Error(ErrorKind::InvalidArgument,
                "the session holds tokens that are not part of the chat: reset it before the chat messages");
  const size_t n = messages_.size();
  if (messages.size() < n || !std::equal(messages_.begin(), messages_.end(), messages.begin()))
    throw Error(ErrorKind::InvalidArgument,
                "the messages do not continue the conversation the session holds (its first " + std::to_string(n) +
                    " messages must be the same): reset the session to start another");
  if (answer_ && (messages.size() == n || messages[n].role != "assistant"))
    throw Error(ErrorKind::InvalidArgument,
                "the session holds a generated answer: give it as an assistant message after the " + std::to_string(n) +
                    " messages held");
  const std::string full = t.render(messages, add_assistant);
  std::string add;
  if (full.starts_with(text_))
    add = full.substr(text_.size());
  else if (answer_)
    add = after_answer(t, messages.first(n + 1), full);
  else
    throw Error(ErrorKind::InvalidArgument,
                "the conversation's rendering does not continue the text the session holds: reset the session");
  messages_.assign(messages.begin(), messages.end());
  text_ += add;
  answer_ = false;
  return add;
}

void ChatHistory::generated(std::string_view text) {
  text_ += text;
  answer_ = true;
}

void ChatHistory::invalidate() { invalid_ = true; }

void ChatHistory::clear() {
  messages_.clear();
  text_.clear();
  answer_ = invalid_ = false;
}

}  // namespace snapvk
