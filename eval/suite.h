// This project's long-context suite, built from real text and emitted as LongBench records (so `llm eval` runs it
// like any LongBench file). Tasks, each a dataset in eval/longbench.cpp's table:
//   passkey       "The pass key is NNNNN. Remember it. NNNNN is the pass key." at a depth in repeated filler
//   niah          one "special magic number for <key>" sentence at a depth inside real text (the haystack)
//   multi_needle  several such sentences at random depths; the question asks for all numbers, in order
//   doc_qa        "which sentence comes right after <sentence>?" over a window of a real document
// Lengths are approximate tokens (characters / chars_per_token) of the context; depths are percentages of it.
// Everything is a pure function of (haystack text, options): each record draws from its own generator seeded by
// (seed, task, length, depth, index), so adding a task or a length leaves the other records unchanged.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "eval/longbench.h"

namespace llm {

struct SuiteOptions {
  uint64_t seed = 1;
  std::vector<int> lengths = {1000, 2000, 4000};   // approximate context tokens
  std::vector<int> depths = {0, 25, 50, 75, 100};   // needle depth, percent of the context (passkey, niah)
  int per_cell = 1;                                 // records per (length, depth) cell, or per length
  int needles = 4;                                  // multi_needle: needles per record
  std::vector<std::string> tasks = {"passkey", "niah", "multi_needle", "doc_qa"};
  double chars_per_token = 4.0;                     // the length approximation (English text, BPE tokenizers)
};

struct SuiteDocument {
  std::string name;  // file name, for messages
  std::string text;  // whitespace collapsed to single spaces
};

// Reads haystack files (UTF-8 text). A missing or empty file is an error naming it.
std::vector<SuiteDocument> suite_load_haystack(const std::vector<std::string>& paths);

// The sentences a document is cut into (each ends with its separating space; none longer than
// suite_max_sentence_chars, longer ones are split at a space). Exposed for tests.
std::vector<std::string> suite_sentences(const std::string& text);
constexpr size_t suite_max_sentence_chars = 300;

// All records, in order: for each task, for each length, for each depth (passkey, niah), for each index.
// Record ids are "<task>-L<length>-D<depth>-<index>" (D is omitted for multi_needle and doc_qa).
std::vector<LongBenchRecord> suite_generate(const std::vector<SuiteDocument>& docs, const SuiteOptions& o);

}  // namespace llm
