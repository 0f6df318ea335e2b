// A small declarative flag parser for the CLI: every subcommand lists its flags, anything else is an error
// that names the flag and points at --help. Values are read with typed getters that reject garbage.
#pragma once
#include <map>
#include <set>
#include <string>
#include <vector>

namespace llm_cli {

struct FlagSpec {
  const char* names;  // "-m,--model": first long name (without dashes) is the key
  const char* value;  // value placeholder ("PATH"), or nullptr for a boolean switch
  const char* help;
};

struct Args {
  std::string command;
  std::map<std::string, std::string> values;
  std::set<std::string> switches;
  std::vector<std::string> positional;

  bool has(const std::string& key) const { return values.count(key) || switches.count(key); }
  std::string get(const std::string& key, const std::string& def = "") const;
  long long get_int(const std::string& key, long long def) const;  // throws llm::Error on a non-integer
  double get_float(const std::string& key, double def) const;      // throws llm::Error on a non-number
};

// Throws llm::Error for an unknown flag or a missing value. Sets switches["help"] for -h/--help (always known).
Args parse_args(const std::string& command, int argc, char** argv, const std::vector<FlagSpec>& spec);
void print_help(const std::string& command, const std::string& synopsis, const std::vector<FlagSpec>& spec);

// The demo model installed by tools/setup.sh: $LLM_MODEL, else <source dir>/models/..., else ./models/...
std::string default_model_path();

}  // namespace llm_cli
