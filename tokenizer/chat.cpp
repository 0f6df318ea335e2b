// Chat templates written out by hand for the three families (no Jinja engine). Each function follows the
// published template text quoted above it.
#include <algorithm>

#include "loader/error.h"
#include "tokenizer/tokenizer.h"

namespace llm {

namespace {

// out += a + b + c... written as appends (GCC 12 warns falsely on chains of std::string operator+).
template <class... A>
void cat(std::string& out, const A&... parts) {
  (out.append(parts), ...);
}

std::string trim(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

// Meta-Llama-3-8B-Instruct tokenizer_config.json:
//   {% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' +
//   message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}
//   {% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}
//   {{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}
std::string render_llama3(const std::vector<ChatMessage>& msgs, bool gen) {
  std::string out = "<|begin_of_text|>";
  for (const auto& m : msgs)
    cat(out, "<|start_header_id|>", m.role, "<|end_header_id|>\n\n", trim(m.content), "<|eot_id|>");
  if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// ChatML as in SmolLM2-Instruct (default system prompt taken from the model's own template):
//   {% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n
//   DEFAULT<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'
//   + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}
std::string render_chatml(const std::vector<ChatMessage>& msgs, bool gen, const std::string& default_system) {
  std::string out;
  if (!default_system.empty() && (msgs.empty() || msgs[0].role != "system"))
    cat(out, "<|im_start|>system\n", default_system, "<|im_end|>\n");
  for (const auto& m : msgs) cat(out, "<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
  if (gen) out += "<|im_start|>assistant\n";
  return out;
}

// Llama-2-chat (tokenizer_config.json of meta-llama/Llama-2-7b-chat-hf): the system prompt is folded into the
// first user turn as "<<SYS>>\n...\n<</SYS>>\n\n"; user turns are "<s>[INST] text [/INST]", assistant turns
// " text </s>"; contents are stripped. Roles must alternate user/assistant after the optional system message.
std::string render_llama2(const std::vector<ChatMessage>& msgs) {
  std::string out, sys;
  size_t first = 0;
  if (!msgs.empty() && msgs[0].role == "system") {
    sys = msgs[0].content;
    first = 1;
  }
  for (size_t i = first; i < msgs.size(); ++i) {
    const auto& m = msgs[i];
    bool want_user = (i - first) % 2 == 0;
    if ((m.role == "user") != want_user || (m.role != "user" && m.role != "assistant"))
      fail("chat template llama2: roles must be (system), user, assistant, user, ...; message ", i, " has role \"",
           m.role, "\"");
    if (m.role == "user") {
      std::string content;
      if (i == first && first == 1) cat(content, "<<SYS>>\n", sys, "\n<</SYS>>\n\n");
      content += m.content;
      cat(out, "<s>[INST] ", trim(content), " [/INST]");
    } else {
      cat(out, " ", trim(m.content), " </s>");
    }
  }
  return out;
}

}  // namespace

ChatTemplate chat_template_detect(const std::string& text) {
  if (text.find("<|start_header_id|>") != std::string::npos) return ChatTemplate::llama3;
  if (text.find("<|im_start|>") != std::string::npos) return ChatTemplate::chatml;
  if (text.find("[INST]") != std::string::npos) return ChatTemplate::llama2;
  fail("chat template not recognised (known families: llama3, chatml, llama2); pass --chat-template NAME. "
       "Template starts: ", text.substr(0, 120));
}

ChatTemplate chat_template_from_name(const std::string& name) {
  if (name == "llama3") return ChatTemplate::llama3;
  if (name == "chatml") return ChatTemplate::chatml;
  if (name == "llama2") return ChatTemplate::llama2;
  fail("unknown chat template \"", name, "\"; known: llama3, chatml, llama2");
}

const char* chat_template_name(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::llama3: return "llama3";
    case ChatTemplate::chatml: return "chatml";
    case ChatTemplate::llama2: return "llama2";
    case ChatTemplate::none: break;
  }
  return "none";
}

std::string chat_render(ChatTemplate t, const std::vector<ChatMessage>& msgs, bool gen, const std::string& default_system) {
  switch (t) {
    case ChatTemplate::llama3: return render_llama3(msgs, gen);
    case ChatTemplate::chatml: return render_chatml(msgs, gen, default_system);
    case ChatTemplate::llama2: return render_llama2(msgs);
    case ChatTemplate::none: break;
  }
  fail("no chat template: the model has none or an unrecognised one; pass --chat-template llama3|chatml|llama2");
}

std::string chat_render(const Tokenizer& tok, const std::vector<ChatMessage>& msgs, bool gen) {
  if (tok.chat_template == ChatTemplate::none && !tok.chat_template_text.empty())
    chat_template_detect(tok.chat_template_text);  // throws with the template's first characters
  return chat_render(tok.chat_template, msgs, gen, tok.chat_default_system);
}

}  // namespace llm
