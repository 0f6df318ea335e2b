// LongBench (v1) evaluation protocol: per-dataset prompt template, maximum generation length, metric and chat rule;
// the JSONL record reader; middle truncation; post-processing and per-record scoring. The tables are facts from
// THUDM/LongBench (LongBench/config/*.json, pred.py, eval.py at commit 2e00731f); see longbench.cpp.
//
// How `llm eval` uses this, per record r of dataset d = longbench_dataset(r.dataset):
//   prompt = longbench_format_prompt(d.prompt, r)
//   ids    = tokenize(prompt) (with BOS as the tokenizer adds it); ids = truncate_middle(ids, ctx - d.max_gen)
//            (LongBench's max_length is the model's context budget for the prompt; it keeps the first and last half)
//   if (!d.skip_chat) wrap the (detokenized) prompt in the model's chat template
//   greedy decode at most d.max_gen tokens; stop at EOS, and also at a "\n" token when d.stop_at_newline
//   score  = longbench_score(d, prediction, r.answers, r.all_classes)   (in [0, 1]; LongBench prints 100x)
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "eval/metrics.h"

namespace llm {

struct LongBenchDataset {
  std::string name;     // "hotpotqa", ... or one of this project's suite tasks ("passkey", "niah", ...)
  std::string prompt;   // template with {context} and {input}
  int max_gen;          // maximum new tokens
  Metric metric;
  bool skip_chat;       // true: the raw prompt goes to the model (no chat template), as pred.py does for few-shot tasks
  bool first_line;      // score only the first line of the prediction (after leading newlines)
  bool stop_at_newline; // stop generation at a "\n" token as well as EOS (pred.py does this for samsum)
  bool from_longbench;  // false for this project's own suite tasks
};

// The dataset's protocol; an unknown name is an llm::Error listing the known ones.
const LongBenchDataset& longbench_dataset(std::string_view name);
std::vector<std::string> longbench_dataset_names();

struct LongBenchRecord {
  std::string input;
  std::string context;
  std::vector<std::string> answers;
  std::optional<std::vector<std::string>> all_classes;  // null in the JSONL for all but classification tasks
  int64_t length = 0;                                   // words (English) / characters (Chinese) of the context
  std::string dataset;
  std::string id;  // "_id"
};

// One JSONL line -> record. `where` names the file for errors; line is 1-based. Errors (missing field, wrong type,
// unknown dataset, empty context, no answers, bad JSON) name the file, the line and the _id when there is one.
LongBenchRecord longbench_parse_record(std::string_view json_line, const std::string& where, size_t line);
// All records of a JSONL file (blank lines skipped); an empty file is an error.
std::vector<LongBenchRecord> longbench_read_jsonl(const std::string& path);
// Serialise a record as one JSONL line (no trailing newline), the format longbench_parse_record reads.
std::string longbench_record_json(const LongBenchRecord& r);

// Python's str.format over the record: {context} and {input} substituted, "{{" and "}}" are literal braces. Any
// other field name is an error naming it.
std::string longbench_format_prompt(std::string_view tmpl, const LongBenchRecord& r);

// LongBench's middle truncation: if ids is longer than max_len, keep the first max_len/2 and the last max_len/2
// (integer half, so an odd max_len keeps max_len - 1). LongBench decodes both halves to text and re-tokenizes the
// joined string; working on ids skips that round trip (the token at the seam may differ). max_len < 2 is an error.
std::vector<int32_t> truncate_middle(const std::vector<int32_t>& ids, size_t max_len);

// LongBench's per-dataset post-processing: first line after leading newlines when d.first_line.
std::string longbench_postprocess(const LongBenchDataset& d, std::string_view prediction);
// eval.py's scorer for one record: post-process, then the best score over the reference answers (0 if none).
double longbench_score(const LongBenchDataset& d, std::string_view prediction, const std::vector<std::string>& answers,
                       const std::optional<std::vector<std::string>>& all_classes,
                       FuzzMatcher fm = FuzzMatcher::difflib);
// LongBench-E length bucket of a record: "0-4k", "4-8k" or "8k+" (by the record's length field).
const char* longbench_length_bucket(int64_t length);

}  // namespace llm
