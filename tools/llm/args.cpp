#include "args.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "loader/error.h"

namespace llm_cli {

static std::vector<std::string> split_names(const char* names) {
  std::vector<std::string> out;
  std::stringstream ss(names);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

static std::string key_of(const FlagSpec& f) {
  auto names = split_names(f.names);
  for (const auto& n : names)
    if (n.rfind("--", 0) == 0) return n.substr(2);
  return names.front().substr(1);
}

std::string Args::get(const std::string& key, const std::string& def) const {
  auto it = values.find(key);
  return it == values.end() ? def : it->second;
}

long long Args::get_int(const std::string& key, long long def) const {
  auto it = values.find(key);
  if (it == values.end()) return def;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(it->second.c_str(), &end, 10);
  if (it->second.empty() || *end != '\0' || errno)
    llm::fail("llm ", command, ": --", key, " expects an integer, got '", it->second, "'");
  return v;
}

double Args::get_float(const std::string& key, double def) const {
  auto it = values.find(key);
  if (it == values.end()) return def;
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(it->second.c_str(), &end);
  if (it->second.empty() || *end != '\0' || errno)
    llm::fail("llm ", command, ": --", key, " expects a number, got '", it->second, "'");
  return v;
}

Args parse_args(const std::string& command, int argc, char** argv, const std::vector<FlagSpec>& spec) {
  Args a;
  a.command = command;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      a.switches.insert("help");
      continue;
    }
    if (arg.size() < 2 || arg[0] != '-' || arg == "--") {
      a.positional.push_back(arg);
      continue;
    }
    std::string inline_value;
    bool has_inline = false;
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_inline = true;
    }
    const FlagSpec* found = nullptr;
    for (const auto& f : spec)
      for (const auto& n : split_names(f.names))
        if (n == arg) found = &f;
    if (!found) llm::fail("llm ", command, ": unknown flag '", arg, "' (see 'llm ", command, " --help')");
    std::string key = key_of(*found);
    if (!found->value) {
      if (has_inline) llm::fail("llm ", command, ": flag '", arg, "' takes no value");
      a.switches.insert(key);
      continue;
    }
    if (has_inline) {
      a.values[key] = inline_value;
    } else {
      if (i + 1 >= argc) llm::fail("llm ", command, ": flag '", arg, "' needs a value (", found->value, ")");
      a.values[key] = argv[++i];
    }
  }
  return a;
}

void print_help(const std::string& command, const std::string& synopsis, const std::vector<FlagSpec>& spec) {
  std::printf("usage: llm %s %s\n\n", command.c_str(), synopsis.c_str());
  for (const auto& f : spec) {
    std::string left = std::string(f.names) + (f.value ? std::string(" ") + f.value : "");
    std::printf("  %-28s %s\n", left.c_str(), f.help);
  }
}

std::string default_model_path() {
  if (const char* env = std::getenv("LLM_MODEL"); env && *env) return env;
  const std::string name = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  std::string src = std::string(LLM_SOURCE_DIR) + "/" + name;
  if (std::filesystem::exists(src)) return src;
  return name;
}

}  // namespace llm_cli
