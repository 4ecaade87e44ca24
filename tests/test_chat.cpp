// Chat templates (host/model/chat_template.h) without a device: every family rendered as
// llama.cpp renders it (the expected strings are llama.cpp's, tests/test-chat-template.cpp),
// detection from real template texts, default system messages, the SmolLM2 reference prompt
// token for token, end-of-generation tokens, and the incremental conversation a session holds.
// ChatCli: the CLI's chat on a device (`snapvk run --chat`, `snapvk chat` through a pipe). The
// C and C++ chat APIs are in test_api.cpp (ApiChat).
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/gguf/gguf.h"
#include "host/model/chat_template.h"
#include "host/model/tokenizer.h"
#include "runtime/error.h"
#include "tests/cli_runner.h"
#include "tests/test_util.h"

namespace snapvk::test {
namespace {

// llama.cpp's test conversation (tests/test-chat-template.cpp), rendered with add_generation_prompt.
const std::vector<ChatMessage> kConversation = {
    {"system", "You are a helpful assistant"},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "Who are you"},
    {"assistant", "   I am an assistant   "},
    {"user", "Another question"},
};

struct LlamaCppCase {
  const char* name;
  const char* template_text;
  ChatFormat format;
  const char* expected;
};

// Template texts and expected outputs as llama.cpp's test has them; the two long Mistral v3
// templates are cut to the lines that tell them apart.
const LlamaCppCase kCases[] = {
    {"teknium/OpenHermes-2.5-Mistral-7B",
     R"({% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})",
     ChatFormat::ChatML,
     "<|im_start|>system\nYou are a helpful "
     "assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi "
     "there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n   I am an assistant   "
     "<|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n<|im_start|>assistant\n"},
    {"mistralai/Mistral-7B-Instruct-v0.2 (pre-v1, no system prompt)",
     R"({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %})",
     ChatFormat::Llama2,
     "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an assistant   "
     "</s>[INST] Another question [/INST]"},
    {"TheBloke/FusionNet_34Bx2_MoE-AWQ",
     "{%- for idx in range(0, messages|length) -%}\n{%- if messages[idx]['role'] == 'user' -%}\n{%- if idx > 1 "
     "-%}\n{{- "
     "bos_token + '[INST] ' + messages[idx]['content'] + ' [/INST]' -}}\n{%- else -%}\n{{- messages[idx]['content'] + "
     "' "
     "[/INST]' -}}\n{%- endif -%}\n{% elif messages[idx]['role'] == 'system' %}\n{{- '[INST] <<SYS>>\\n' + "
     "messages[idx]['content'] + '\\n<</SYS>>\\n\\n' -}}\n{%- elif messages[idx]['role'] == 'assistant' -%}\n{{- ' '  "
     "+ "
     "messages[idx]['content'] + ' ' + eos_token -}}\n{% endif %}\n{% endfor %}",
     ChatFormat::Llama2SysBos,
     "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s><s>[INST] Who are you [/INST]  "
     " I "
     "am an assistant   </s><s>[INST] Another question [/INST]"},
    {"bofenghuang/vigogne-2-70b-chat",
     "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
     "system_message = "
     "messages[0]['content'] %}{% elif true == true and not '<<SYS>>' in messages[0]['content'] %}{% set loop_messages "
     "= "
     "messages %}{% set system_message = 'Vous \xC3\xAAtes Vigogne, un assistant IA cr\xC3\xA9\xC3\xA9 par Zaion Lab. "
     "Vous "
     "suivez extr\xC3\xAAmement bien les instructions. Aidez autant que vous le pouvez.' %}{% else %}{% set "
     "loop_messages = "
     "messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] "
     "== "
     "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
     "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set "
     "content = "
     "'<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
     "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + content.strip() + ' [/INST]' "
     "}}{% "
     "elif message['role'] == 'system' %}{{ '<<SYS>>\\n' + content.strip() + '\\n<</SYS>>\\n\\n' }}{% elif "
     "message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
     ChatFormat::Llama2SysStrip,
     "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s>[INST] Who are you [/INST]I am "
     "an "
     "assistant</s>[INST] Another question [/INST]"},
    {"google/gemma-7b-it",
     R"({% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %})",
     ChatFormat::Gemma,
     "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>model\nHi "
     "there<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an "
     "assistant<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n"},
    {"Llama-3",
     "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
     "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
     "%}{% "
     "set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{{ "
     "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}",
     ChatFormat::Llama3,
     "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful "
     "assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_"
     "header_id|>\n\nHi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are "
     "you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an "
     "assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnother "
     "question<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"Phi-3-mini",
     "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' + '\n' + "
     "message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}{% elif (message['role'] == 'assistant') "
     "%}{{message['content'] + '<|end|>' + '\n'}}{% endif %}{% endfor %}",
     ChatFormat::Phi3,
     "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi "
     "there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   "
     "<|end|>\n<|user|>\nAnother question<|end|>\n<|assistant|>\n"},
    {"Phi-3-small",
     "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + "
     "'<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif "
     "%}",
     ChatFormat::Phi3,
     "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi "
     "there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   "
     "<|end|>\n<|user|>\nAnother question<|end|>\n<|assistant|>\n"},
    {"Phi-3-vision",
     "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + '<|end|>\n' }}{% "
     "endfor "
     "%}{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}{{- '<|assistant|>\n' -}}{% endif %}",
     ChatFormat::Phi3,
     "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi "
     "there<|end|>\n<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   "
     "<|end|>\n<|user|>\nAnother question<|end|>\n<|assistant|>\n"},
    {"mistralai/Mistral-7B-Instruct-v0.2 (mistralai 'v1' template with a system prompt)",
     "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    {%- set "
     "loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n{{- "
     "bos_token "
     "}}\n{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n   "
     "   "
     "  {{- raise_exception('After the optional system message, conversation roles must alternate "
     "user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n        {%- "
     "if "
     "loop.first and system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + "
     "message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' "
     "[/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + "
     "message['content'] + eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles "
     "are "
     "supported, with the exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n",
     ChatFormat::MistralV1,
     " [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are you [/INST]    I am an "
     "assistant   "
     "</s> [INST] Another question [/INST]"},
    {"Mistral-Large-Instruct-2407 (mistralai 'v3' template; excerpt)",
     "{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n{{- bos_token }}\n{%- for message in "
     "loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n        {%- if tools is not none and (message == "
     "user_messages[-1]) %}\n            {{- \"[AVAILABLE_TOOLS] [\" }}\n        {%- endif %}\n        {%- if "
     "loop.last and "
     "system_message is defined %}\n            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + "
     "\"[/INST]\" }}\n        {%- else %}\n            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n       "
     " {%- "
     "endif %}\n    {%- elif message[\"role\"] == \"assistant\" %}\n        {{- \" \" + message[\"content\"]|trim + "
     "eos_token}}\n    {%- endif %}\n{%- endfor %}\n",
     ChatFormat::MistralV3,
     "[INST] You are a helpful assistant\n\nHello[/INST] Hi there</s>[INST] Who are you[/INST] I am an "
     "assistant</s>[INST] Another question[/INST]"},
    {"Mistral-Nemo-Instruct-2407 (mistralai 'v3-tekken' template; excerpt)",
     "{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n        {%- "
     "if "
     "tools is not none and (message == user_messages[-1]) %}\n            {{- \"[AVAILABLE_TOOLS][\" }}\n        {%- "
     "endif %}\n        {%- if loop.last and system_message is defined %}\n            {{- \"[INST]\" + system_message "
     "+ "
     "\"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n        {%- else %}\n            {{- \"[INST]\" + "
     "message[\"content\"] + \"[/INST]\" }}\n        {%- endif %}\n    {%- elif message[\"role\"] == \"assistant\" "
     "%}\n   "
     "     {{- message[\"content\"] + eos_token}}\n    {%- endif %}\n{%- endfor %}\n",
     ChatFormat::MistralV3Tekken,
     "[INST]You are a helpful assistant\n\nHello[/INST]Hi there</s>[INST]Who are you[/INST]   I am an assistant   "
     "</s>[INST]Another question[/INST]"},
    {"mistralai/Mistral-Large-Instruct-2411 (mistralai 'v7' template)",
     "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] "
     "+ "
     "'[/INST]' }}{% elif message['role'] == 'system' %}{{ '[SYSTEM_PROMPT] ' + message['content'] + "
     "'[/SYSTEM_PROMPT]' "
     "}}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% else %}{{ "
     "raise_exception('Only user, system and assistant roles are supported!') }}{% endif %}{% endfor %}",
     ChatFormat::MistralV7,
     "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello[/INST] Hi there</s>[INST] Who are "
     "you[/INST]    I am an assistant   </s>[INST] Another question[/INST]"},
};

TEST(ChatTemplate, EveryFamilyRendersAsLlamaCpp) {
  for (const LlamaCppCase& c : kCases) {
    SCOPED_TRACE(c.name);
    const ChatTemplate t = ChatTemplate::from_text(c.template_text);
    EXPECT_EQ(t.format(), c.format) << t.name();
    EXPECT_EQ(t.default_system(), "");
    EXPECT_EQ(t.render(kConversation, true), c.expected);
  }
}

TEST(ChatTemplate, GenerationPromptOnlyWhenAsked) {
  const std::vector<ChatMessage> one = {{"user", "Hi"}};
  EXPECT_EQ(ChatTemplate(ChatFormat::ChatML).render(one, false), "<|im_start|>user\nHi<|im_end|>\n");
  EXPECT_EQ(ChatTemplate(ChatFormat::Llama3).render(one, false),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
  EXPECT_EQ(ChatTemplate(ChatFormat::Gemma).render(one, false), "<start_of_turn>user\nHi<end_of_turn>\n");
  EXPECT_EQ(ChatTemplate(ChatFormat::Phi3).render(one, true), "<|user|>\nHi<|end|>\n<|assistant|>\n");
  EXPECT_EQ(ChatTemplate(ChatFormat::Llama2).render(one, true), "[INST] Hi [/INST]");  // no generation prompt
}

TEST(ChatTemplate, NamesAndErrors) {
  for (const char* name : {"chatml", "llama3", "gemma", "phi3", "llama2", "mistral-v7"}) {
    EXPECT_STREQ(ChatTemplate::from_name(name).name(), name);
    EXPECT_STREQ(ChatTemplate::from_text(name).name(), name);  // llama.cpp's detection takes names too
  }
  EXPECT_EQ(ChatTemplate::from_name("mistral").format(), ChatFormat::Llama2);
  EXPECT_EQ(ChatTemplate::from_name("chatml").source(), "chosen by name");
  auto message = [](auto f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  const std::string bad_name = message([] { ChatTemplate::from_name("vicuna"); });
  EXPECT_NE(bad_name.find("unknown chat template 'vicuna'"), std::string::npos) << bad_name;
  EXPECT_NE(bad_name.find("chatml, llama3, gemma, mistral (alias llama2), phi3"), std::string::npos) << bad_name;
  EXPECT_EQ(bad_name.find('\n'), std::string::npos);
  const std::string invalid = message([] { ChatTemplate::from_text("INVALID TEMPLATE"); });
  EXPECT_NE(invalid.find("not a chat template snapvk recognises"), std::string::npos) << invalid;
  EXPECT_NE(invalid.find("--chat-template NAME (chatml, llama3"), std::string::npos) << invalid;
  // Zephyr's markers: llama.cpp takes it for zephyr, so it is not taken for Phi-3 or ChatML here.
  const std::string zephyr = message([] {
    ChatTemplate::from_text(
        "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + "
        "'<|endoftext|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|user|>\\n' }}{% endif %}");
  });
  EXPECT_NE(zephyr.find("llama.cpp's 'zephyr' template"), std::string::npos) << zephyr;
}

std::string smollm2_template() {
  return GgufFile::open(model_path("SmolLM2-135M-Instruct.Q4_1.gguf")).get_string("tokenizer.chat_template", "");
}

const char* kSmolDefault = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

TEST(ChatTemplate, DefaultSystemMessageFromTheTemplateText) {
  const ChatTemplate smol = ChatTemplate::from_text(smollm2_template());
  EXPECT_EQ(smol.format(), ChatFormat::ChatML);
  EXPECT_EQ(smol.default_system(), kSmolDefault);
  // Rendered when the conversation has no system message, as SmolLM2's Jinja template does.
  const std::vector<ChatMessage> user = {{"user", "Hi"}};
  EXPECT_EQ(smol.render(user, true), std::string("<|im_start|>system\n") + kSmolDefault +
                                         "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  const std::vector<ChatMessage> with_system = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_EQ(smol.render(with_system, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
  // A name keeps the default the GGUF's text states in that format's markers.
  EXPECT_EQ(ChatTemplate::from_name("chatml", smollm2_template()).default_system(), kSmolDefault);
  EXPECT_EQ(ChatTemplate::from_name("llama3", smollm2_template()).default_system(), "");

  // Qwen2.5's (an excerpt): the default is in the else branch's literal.
  const char* qwen = R"({%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %})";
  EXPECT_EQ(ChatTemplate::from_text(qwen).default_system(),
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  // Llama 3.1's system turn is built from pieces: no literal default.
  const char* llama31 =
      R"({{- "<|start_header_id|>system<|end_header_id|>\n\n" }}{{- "Cutting Knowledge Date: December 2023\n" }}{{- system_message }}{{- "<|eot_id|>" }}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }})";
  const ChatTemplate l31 = ChatTemplate::from_text(llama31);
  EXPECT_EQ(l31.format(), ChatFormat::Llama3);
  EXPECT_EQ(l31.default_system(), "");
  // Phi-3 with a default written as raw text, and a comment that must not count.
  EXPECT_EQ(find_default_system("{# '<|system|>\\nno<|end|>' #}<|system|>\nBe kind.<|end|>\n{{ '<|assistant|>' }}",
                                ChatFormat::Phi3),
            "Be kind.");
}

Tokenizer smollm2_tokenizer(const GgufFile& f) { return Tokenizer(vocab_from_gguf(f)); }

TEST(ChatTemplate, SmolLM2ReferenceConversationTokenForToken) {
  const GgufFile f = GgufFile::open(model_path("SmolLM2-135M-Instruct.Q4_1.gguf"));
  const Tokenizer tok = smollm2_tokenizer(f);
  const ChatTemplate t = ChatTemplate::for_model(f, tok);
  EXPECT_EQ(t.source(), "tokenizer.chat_template");
  std::ifstream txt(model_path("reference/smollm2-prompt-4-chatml.txt"), std::ios::binary),
      js(model_path("reference/smollm2-prompt-4-chatml.json"));
  ASSERT_TRUE(txt && js);
  std::stringstream text;
  text << txt.rdbuf();
  const nlohmann::json ref = nlohmann::json::parse(js);
  const std::vector<ChatMessage> messages = {{"system", "You are a helpful assistant."},
                                             {"user", "What is the capital of France? Answer in one sentence."}};
  const std::string rendered = t.render(messages, true);
  EXPECT_EQ(rendered, text.str());
  // BOS as the vocabulary asks (SmolLM2: none), special tokens parsed.
  EXPECT_EQ(tok.encode(rendered, true, true), ref.at("prompt_tokens").get<std::vector<int32_t>>());
}

TEST(ChatTemplate, EndOfTurnTokensEndGeneration) {
  const GgufFile f = GgufFile::open(model_path("SmolLM2-135M-Instruct.Q4_1.gguf"));
  const Tokenizer tok = smollm2_tokenizer(f);
  const ChatTemplate t = ChatTemplate::for_model(f, tok);
  const int32_t im_end = tok.find_token("<|im_end|>");
  EXPECT_EQ(im_end, 2);
  EXPECT_EQ(t.stop_tokens(tok), (std::vector<int32_t>{2, 0}));  // end of turn = eos; eot by its text, <|endoftext|>
  for (int32_t id : {im_end, tok.find_token("<|endoftext|>")}) EXPECT_TRUE(tok.is_eog(id)) << id;
  EXPECT_FALSE(tok.is_eog(tok.find_token("<|im_start|>")));
  // Each family's end of turn is an end-of-generation token of a vocabulary that has it.
  Vocab v = vocab_defaults("gpt2");
  v.tokens = {"a", "b", "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>", "<start_of_turn>"};
  v.types.assign(v.tokens.size(), int32_t(TokenType::Normal));
  v.bos = v.eos = 0;
  const Tokenizer hand(v);
  for (ChatFormat fmt :
       {ChatFormat::ChatML, ChatFormat::Llama3, ChatFormat::Gemma, ChatFormat::Phi3, ChatFormat::MistralV7}) {
    const ChatTemplate ct(fmt);
    const int32_t id = hand.find_token(ct.end_of_turn());
    ASSERT_GE(id, 0) << ct.name();
    EXPECT_TRUE(hand.is_eog(id)) << ct.name();
    EXPECT_EQ(ct.stop_tokens(hand).front(), id) << ct.name();
  }
  // No template in the GGUF: the vocabulary decides.
  const GgufFile stories = GgufFile::open(model_path("stories260K.gguf"));
  EXPECT_EQ(ChatTemplate::for_model(stories, hand).format(), ChatFormat::Gemma);
  EXPECT_NE(ChatTemplate::for_model(stories, hand).source().find("<start_of_turn>"), std::string::npos);
  const ChatTemplate plain = ChatTemplate::for_model(stories, Tokenizer(vocab_from_gguf(stories)));
  EXPECT_EQ(plain.format(), ChatFormat::ChatML);
  EXPECT_EQ(plain.source(), "no tokenizer.chat_template; ChatML by default");
}

TEST(ChatHistory, EachTurnAppendsOnlyItsOwnText) {
  const ChatTemplate t(ChatFormat::ChatML);
  ChatHistory h;
  std::vector<ChatMessage> m = {{"system", "S"}, {"user", "Q1"}};
  std::string cache = h.next(t, m, true);
  EXPECT_EQ(cache, t.render(m, true));
  h.generated("A1");
  cache += "A1";
  m.push_back({"assistant", "A1"});
  m.push_back({"user", "Q2"});
  const std::string add = h.next(t, m, true);
  EXPECT_EQ(add, "<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n");
  cache += add;
  EXPECT_EQ(cache, t.render(m, true));  // the cache holds what a full rendering would
  EXPECT_EQ(h.text(), cache);
  EXPECT_EQ(h.next(t, m, true), "");  // nothing new
}

TEST(ChatHistory, TrimmedAnswersStillCloseTheirTurn) {
  const ChatTemplate t(ChatFormat::Gemma);
  ChatHistory h;
  std::vector<ChatMessage> m = {{"user", "Q1"}};
  h.next(t, m, true);
  h.generated("  A1 \n");  // Gemma trims: the rendering does not continue the cache's text
  m.push_back({"assistant", "  A1 \n"});
  m.push_back({"user", "Q2"});
  EXPECT_EQ(h.next(t, m, true), "<end_of_turn>\n<start_of_turn>user\nQ2<end_of_turn>\n<start_of_turn>model\n");
  // Llama 3 trims too; an answer stopped early (no end of turn generated) is closed the same way.
  const ChatTemplate l3(ChatFormat::Llama3);
  ChatHistory h3;
  std::vector<ChatMessage> m3 = {{"user", "Q"}};
  h3.next(l3, m3, true);
  h3.generated(" partial ");
  m3.push_back({"assistant", " partial "});
  m3.push_back({"user", "Q2"});
  EXPECT_EQ(h3.next(l3, m3, true),
            "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nQ2<|eot_id|><|start_header_id|>assistant<|end_"
            "header_id|>\n\n");
}

TEST(ChatHistory, RejectsWhatDoesNotContinueTheConversation) {
  const ChatTemplate t(ChatFormat::ChatML);
  ChatHistory h;
  std::vector<ChatMessage> m = {{"user", "Q1"}};
  h.next(t, m, true);
  h.generated("A1");
  const std::vector<ChatMessage> no_answer = {{"user", "Q1"}, {"user", "Q2"}};
  EXPECT_THROW(h.next(t, no_answer, true), Error);
  const std::vector<ChatMessage> edited = {{"user", "Q0"}, {"assistant", "A1"}, {"user", "Q2"}};
  EXPECT_THROW(h.next(t, edited, true), Error);
  const std::string held = h.text();
  EXPECT_EQ(h.text(), held);  // failures change nothing
  h.invalidate();
  const std::vector<ChatMessage> good = {{"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"}};
  EXPECT_THROW(h.next(t, good, true), Error);
  h.clear();
  EXPECT_EQ(h.next(t, good, true), t.render(good, true));
}

// ---- the CLI: `snapvk run --chat` and `snapvk chat` (lines through a pipe) on a device ------
// stories260K has no chat template (ChatML by default: nonsense answers, but each turn must run
// and stop).

// The token ids of chatml_text(system, user) in stories260K's vocabulary.
std::vector<int32_t> chatml_tokens(const std::string& system, const std::string& user) {
  static const Tokenizer tok(vocab_from_gguf(GgufFile::open(model_path("stories260K.gguf"))));
  return tok.encode(chatml_text(system, user), true, true);
}

TEST(ChatCli, RunChatPromptIsTheRenderedTurn) {
  const CliResult r = run_cli({"run", "-m", model_path("stories260K.gguf"), "--chat", "-p", "Hello there", "--system",
                               "Be brief.", "--chat-template", "chatml", "--json", "-n", "8", "--temp", "0"});
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j.at("prompt_tokens").get<std::vector<int32_t>>(), chatml_tokens("Be brief.", "Hello there"));
  EXPECT_EQ(j.at("chat_template"), "chatml");
  EXPECT_EQ(j.at("chat_template_source"), "chosen by name");
  EXPECT_LE(j.at("generated_tokens").size(), 8u);
}

TEST(ChatCli, RunChatWithoutTemplateSaysWhichItUses) {
  const CliResult r =
      run_cli({"run", "-m", model_path("stories260K.gguf"), "--chat", "-p", "Hi", "-n", "4", "--temp", "0"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("chat template: chatml (no tokenizer.chat_template; ChatML by default)"), std::string::npos)
      << r.err;
}

TEST(ChatCli, BadTemplateNamesAndOptionsAreOneLineErrors) {
  const std::string m = model_path("stories260K.gguf");
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"run", "-m", m, "--chat", "-p", "Hi", "--chat-template", "nope"},
                                             {"chat", "-m", m, "--chat-template", "nope"}}) {
    const CliResult r = run_cli(args);
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(r.err.find("unknown --chat-template 'nope' (names: chatml, llama3, gemma, mistral (alias llama2), phi3"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  const CliResult sys = run_cli({"run", "-m", m, "-p", "Hi", "--system", "S"});
  EXPECT_EQ(sys.code, 1);
  EXPECT_NE(sys.err.find("--system and --chat-template need --chat"), std::string::npos) << sys.err;
}

// "[kv snapkv: X retained for N tokens (first K compressed), ...]" -> (N, K) per turn.
std::vector<std::pair<int, int>> kv_lines(const std::string& err) {
  std::vector<std::pair<int, int>> out;
  const std::regex re(R"(\[kv snapkv: .* retained for (\d+) tokens \(first (\d+) compressed\))");
  for (auto it = std::sregex_iterator(err.begin(), err.end(), re); it != std::sregex_iterator(); ++it)
    out.emplace_back(std::stoi((*it)[1]), std::stoi((*it)[2]));
  return out;
}

TEST(ChatCli, ChatThroughAPipeAppendsEachTurnAndResets) {
  const CliResult r = run_cli_with_input(
      {"chat", "-m", model_path("stories260K.gguf"), "--chat-template", "chatml", "--system", "You tell stories.",
       "--kv-policy", "snapkv", "--kv-ratio", "0.5", "--kv-window", "4", "-n", "12", "--temp", "0"},
      "Tell me a story.\nAnd then?\n/reset\nOnce upon a time\n");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("chat template chatml (chosen by name)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[new conversation]"), std::string::npos) << r.err;
  const auto turns = kv_lines(r.err);
  ASSERT_EQ(turns.size(), 3u) << r.err;
  // The first turn is compressed; the second is appended after it (the same compressed prompt,
  // more tokens held), not prefilled again; /reset starts a new conversation. (With a --kv-budget
  // the chat is endless and compacts at each turn's end: tests/test_endless.cpp.)
  const int first_prompt = int(chatml_tokens("You tell stories.", "Tell me a story.").size());
  EXPECT_EQ(turns[0].second, first_prompt);
  EXPECT_EQ(turns[1].second, first_prompt);
  EXPECT_GT(turns[1].first, turns[0].first + 12);
  EXPECT_EQ(turns[2].second, int(chatml_tokens("You tell stories.", "Once upon a time").size()));
  EXPECT_GE(std::count(r.out.begin(), r.out.end(), '\n'), 3) << r.out;  // each answer ends its line
}

}  // namespace
}  // namespace snapvk::test
