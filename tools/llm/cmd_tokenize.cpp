// llm tokenize: encode a text (-p) or a file of llama.cpp test cases (--cases) with a model's tokenizer.
//   -p TEXT        prints the ids on one line (or, with --pieces, one "id 'piece'" per line)
//   --cases FILE   cases separated by "\n__ggml_vocab_test__\n" (llama.cpp's .inp format); prints one line per
//                  case in llama.cpp's .out format: each id preceded by a space, an empty line for no ids.
// Special token texts are always matched (as llama.cpp's vectors expect); --bos prepends BOS when the model
// adds one.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "args.h"
#include "commands.h"
#include "loader/error.h"
#include "tokenizer/tokenizer.h"

namespace llm_cli {

int cmd_tokenize(int argc, char** argv) {
  const std::vector<FlagSpec> spec = {
      {"-m,--model", "PATH", "tokenizer.json, a folder with one, or a .gguf (default: the demo model)"},
      {"-p,--prompt", "TEXT", "text to encode"},
      {"--cases", "FILE", "llama.cpp vector file (.inp): print one .out line per case"},
      {"--pieces", nullptr, "print each token's id and text instead of the ids"},
      {"--bos", nullptr, "prepend BOS if the model adds one"},
      {"--no-special", nullptr, "encode special-token texts as plain text"},
  };
  Args a = parse_args("tokenize", argc, argv, spec);
  if (a.has("help")) {
    print_help("tokenize", "-m PATH (-p TEXT | --cases FILE) [--pieces] [--bos]", spec);
    return 0;
  }
  if (a.has("prompt") == a.has("cases")) llm::fail("llm tokenize: give exactly one of -p TEXT or --cases FILE");
  if (!a.positional.empty()) llm::fail("llm tokenize: unexpected argument '", a.positional[0], "'");
  llm::Tokenizer tok = llm::tokenizer_load(a.get("model", default_model_path()));
  bool bos = a.has("bos"), special = !a.has("no-special");

  if (a.has("prompt")) {
    std::vector<int32_t> ids = tok.encode(a.get("prompt"), bos, special);
    if (a.has("pieces")) {
      for (int32_t id : ids) std::printf("%6d '%s'\n", id, tok.token_piece(id).c_str());
    } else {
      for (size_t i = 0; i < ids.size(); ++i) std::printf(i ? " %d" : "%d", ids[i]);
      std::printf("\n");
    }
    return 0;
  }
  std::ifstream f(a.get("cases"), std::ios::binary);
  if (!f) llm::fail("llm tokenize: cannot open cases file ", a.get("cases"));
  std::stringstream ss;
  ss << f.rdbuf();
  std::string all = ss.str();
  const std::string sep = "\n__ggml_vocab_test__\n";
  size_t start = 0;
  while (start < all.size()) {
    size_t e = all.find(sep, start);
    if (e == std::string::npos) break;  // text after the last separator is not a case
    std::vector<int32_t> ids = tok.encode(std::string_view(all).substr(start, e - start), bos, special);
    std::string line;
    for (int32_t id : ids) {
      line.append(" ").append(std::to_string(id));
      if (a.has("pieces")) line.append(":'").append(tok.token_piece(id)).append("'");
    }
    std::printf("%s\n", line.c_str());
    start = e + sep.size();
  }
  return 0;
}

}  // namespace llm_cli
