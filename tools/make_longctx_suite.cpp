// make_longctx_suite: writes this project's long-context suite (passkey, needle in a haystack, multi-needle,
// document QA; see eval/suite.h) as LongBench JSONL, which `llm eval --data FILE` reads.
//
//   make_longctx_suite [--haystack FILE]... [--out FILE] [--seed N] [--lengths 1000,2000,4000 | --max-context N]
//                      [--depths 0,25,50,75,100] [--per-cell N] [--needles K] [--tasks passkey,niah,...]
//                      [--chars-per-token 4]
//
// Without --haystack it uses the Debian license texts in tests/data/eval/haystack/ of the source tree.
// --max-context N (tokens) picks lengths 1024, 2048, ... and N - 256, leaving room for the prompt and the answer.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "eval/suite.h"
#include "loader/error.h"

namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    std::string item = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

long parse_int(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0') llm::fail(flag, ": expected an integer, got \"", v, "\"");
  return x;
}

double parse_double(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0') llm::fail(flag, ": expected a number, got \"", v, "\"");
  return x;
}

std::vector<int> int_list(const std::string& flag, const std::string& v) {
  std::vector<int> out;
  for (const auto& s : split_list(v)) out.push_back(static_cast<int>(parse_int(flag, s)));
  if (out.empty()) llm::fail(flag, ": expected a comma-separated list of integers, got \"", v, "\"");
  return out;
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--haystack FILE]... [--out FILE] [--seed N] [--lengths L1,L2,.. | --max-context N]\n"
               "          [--depths D1,D2,..] [--per-cell N] [--needles K] [--tasks passkey,niah,multi_needle,doc_qa]\n"
               "          [--chars-per-token N]\n",
               argv0);
  return 2;
}

int run(int argc, char** argv) {
  llm::SuiteOptions o;
  std::vector<std::string> haystack;
  std::string out_path;
  long max_context = 0;
  bool lengths_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") return usage(argv[0]);
    if (i + 1 >= argc) llm::fail(flag, ": missing value (or unknown flag); see --help");
    std::string v = argv[++i];
    if (flag == "--haystack") haystack.push_back(v);
    else if (flag == "--out") out_path = v;
    else if (flag == "--seed") o.seed = static_cast<uint64_t>(parse_int(flag, v));
    else if (flag == "--lengths") o.lengths = int_list(flag, v), lengths_given = true;
    else if (flag == "--max-context") max_context = parse_int(flag, v);
    else if (flag == "--depths") o.depths = int_list(flag, v);
    else if (flag == "--per-cell") o.per_cell = static_cast<int>(parse_int(flag, v));
    else if (flag == "--needles") o.needles = static_cast<int>(parse_int(flag, v));
    else if (flag == "--tasks") o.tasks = split_list(v);
    else if (flag == "--chars-per-token") o.chars_per_token = parse_double(flag, v);
    else llm::fail("unknown flag ", flag, "; see --help");
  }
  if (max_context > 0) {
    if (lengths_given) llm::fail("give either --lengths or --max-context, not both");
    // Leave room for the template, the question and the longest answer (256 tokens is ample for every task).
    o.lengths.clear();
    for (long l = 1024; l + 256 <= max_context; l *= 2) o.lengths.push_back(static_cast<int>(l));
    if (o.lengths.empty()) llm::fail("--max-context ", max_context, " is too small; use >= 1280");
    if (o.lengths.back() < max_context - 256) o.lengths.push_back(static_cast<int>(max_context - 256));
  }
  if (haystack.empty()) {
    std::string dir = std::string(LLM_SOURCE_DIR) + "/tests/data/eval/haystack";
    for (const char* f : {"GPL-3", "GPL-2", "LGPL-2.1", "GFDL-1.3", "Apache-2.0", "MPL-2.0", "Artistic"})
      haystack.push_back(dir + "/" + f);
  }
  auto records = llm::suite_generate(llm::suite_load_haystack(haystack), o);
  std::ofstream file;
  if (!out_path.empty()) {
    file.open(out_path, std::ios::binary);
    if (!file) llm::fail(out_path, ": cannot open for writing");
  }
  std::ostream& out = out_path.empty() ? std::cout : file;
  for (const auto& r : records) out << llm::longbench_record_json(r) << '\n';
  out.flush();
  if (!out) llm::fail(out_path.empty() ? "stdout" : out_path, ": write failed");
  std::fprintf(stderr, "make_longctx_suite: %zu records (seed %llu)%s%s\n", records.size(),
               static_cast<unsigned long long>(o.seed), out_path.empty() ? "" : " -> ", out_path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const llm::Error& e) {
    std::fprintf(stderr, "make_longctx_suite: %s\n", e.what());
    return 1;
  }
}
