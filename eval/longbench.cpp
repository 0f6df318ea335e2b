// LongBench's evaluation protocol as data, plus the JSONL reader, prompt formatting, middle truncation and scoring.
// The tables below are facts copied from THUDM/LongBench at commit 2e00731f8d0bff23dc4325161044d0ed8af94c1e:
//   prompt template     LongBench/config/dataset2prompt.json (verbatim, typos such as "asconcisely" included)
//   max_gen             LongBench/config/dataset2maxlen.json
//   metric              LongBench/eval.py, dataset2metric
//   skip_chat           LongBench/pred.py: trec, triviaqa, samsum, lsht, lcc, repobench-p get no chat template
//   first_line          LongBench/eval.py, scorer: trec, triviaqa, samsum, lsht score the first line only
//   stop_at_newline     LongBench/pred.py: samsum also stops at the "\n" token (and must emit at least one token)
// The code is this project's own.
#include "eval/longbench.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "loader/error.h"

namespace llm {
namespace {

const std::vector<LongBenchDataset>& dataset_table() {
  static const std::vector<LongBenchDataset> table = {
    // name, prompt, max_gen, metric, skip_chat, first_line, stop_at_newline, from_longbench
    {"narrativeqa",
     "You are given a story, which can be either a novel or a movie script, and a question. Answer the "
     "question asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n"
     "\n"
     "Story: {context}\n"
     "\n"
     "Now, answer the question based on the story asconcisely as you can, using a single phrase if "
     "possible. Do not provide any explanation.\n"
     "\n"
     "Question: {input}\n"
     "\n"
     "Answer:",
     128, Metric::qa_f1, false, false, false, true},
    {"qasper",
     "You are given a scientific article and a question. Answer the question as concisely as you can, "
     "using a single phrase or sentence if possible. If the question cannot be answered based on the "
     "information in the article, write \"unanswerable\". If the question is a yes/no question, answer "
     "\"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n"
     "\n"
     "Article: {context}\n"
     "\n"
     " Answer the question based on the above article as concisely as you can, using a single phrase or "
     "sentence if possible. If the question cannot be answered based on the information in the article, "
     "write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". "
     "Do not provide any explanation.\n"
     "\n"
     "Question: {input}\n"
     "\n"
     "Answer:",
     128, Metric::qa_f1, false, false, false, true},
    {"multifieldqa_en",
     "Read the following text and answer briefly.\n"
     "\n"
     "{context}\n"
     "\n"
     "Now, answer the following question based on the above text, only give me the answer and do not "
     "output any other words.\n"
     "\n"
     "Question: {input}\n"
     "Answer:",
     64, Metric::qa_f1, false, false, false, true},
    {"multifieldqa_zh",
     "阅读以下文字并用中文简短回答：\n"
     "\n"
     "{context}\n"
     "\n"
     "现在请基于上面的文章回答下面的问题，只告诉我答案，不要输出任何其他字词。\n"
     "\n"
     "问题：{input}\n"
     "回答：",
     64, Metric::qa_f1_zh, false, false, false, true},
    {"hotpotqa",
     "Answer the question based on the given passages. Only give me the answer and do not output any "
     "other words.\n"
     "\n"
     "The following are given passages.\n"
     "{context}\n"
     "\n"
     "Answer the question based on the given passages. Only give me the answer and do not output any "
     "other words.\n"
     "\n"
     "Question: {input}\n"
     "Answer:",
     32, Metric::qa_f1, false, false, false, true},
    {"2wikimqa",
     "Answer the question based on the given passages. Only give me the answer and do not output any "
     "other words.\n"
     "\n"
     "The following are given passages.\n"
     "{context}\n"
     "\n"
     "Answer the question based on the given passages. Only give me the answer and do not output any "
     "other words.\n"
     "\n"
     "Question: {input}\n"
     "Answer:",
     32, Metric::qa_f1, false, false, false, true},
    {"musique",
     "Answer the question based on the given passages. Only give me the answer and do not output any "
     "other words.\n"
     "\n"
     "The following are given passages.\n"
     "{context}\n"
     "\n"
     "Answer the question based on the given passages. Only give me the answer and do not output any "
     "other words.\n"
     "\n"
     "Question: {input}\n"
     "Answer:",
     32, Metric::qa_f1, false, false, false, true},
    {"dureader",
     "请基于给定的文章回答下述问题。\n"
     "\n"
     "文章：{context}\n"
     "\n"
     "请基于上述文章回答下面的问题。\n"
     "\n"
     "问题：{input}\n"
     "回答：",
     128, Metric::rouge_zh, false, false, false, true},
    {"gov_report",
     "You are given a report by a government agency. Write a one-page summary of the report.\n"
     "\n"
     "Report:\n"
     "{context}\n"
     "\n"
     "Now, write a one-page summary of the report.\n"
     "\n"
     "Summary:",
     512, Metric::rouge_l, false, false, false, true},
    {"qmsum",
     "You are given a meeting transcript and a query containing a question or instruction. Answer the "
     "query in one or more sentences.\n"
     "\n"
     "Transcript:\n"
     "{context}\n"
     "\n"
     "Now, answer the query based on the above meeting transcript in one or more sentences.\n"
     "\n"
     "Query: {input}\n"
     "Answer:",
     512, Metric::rouge_l, false, false, false, true},
    {"multi_news",
     "You are given several news passages. Write a one-page summary of all news. \n"
     "\n"
     "News:\n"
     "{context}\n"
     "\n"
     "Now, write a one-page summary of all the news.\n"
     "\n"
     "Summary:",
     512, Metric::rouge_l, false, false, false, true},
    {"vcsum",
     "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n"
     "会议记录：\n"
     "{context}\n"
     "\n"
     "会议总结：",
     512, Metric::rouge_zh, false, false, false, true},
    {"trec",
     "Please determine the type of the question below. Here are some examples of questions.\n"
     "\n"
     "{context}\n"
     "{input}",
     64, Metric::classification, true, true, false, true},
    {"triviaqa",
     "Answer the question based on the given passage. Only give me the answer and do not output any other "
     "words. The following are some examples.\n"
     "\n"
     "{context}\n"
     "\n"
     "{input}",
     32, Metric::qa_f1, true, true, false, true},
    {"samsum",
     "Summarize the dialogue into a few short sentences. The following are some examples.\n"
     "\n"
     "{context}\n"
     "\n"
     "{input}",
     128, Metric::rouge_l, true, true, true, true},
    {"lsht",
     "请判断给定新闻的类别，下面是一些例子。\n"
     "\n"
     "{context}\n"
     "{input}",
     64, Metric::classification, true, true, false, true},
    {"passage_count",
     "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please "
     "carefully read these paragraphs and determine how many unique paragraphs there are after removing "
     "duplicates. In other words, how many non-repeating paragraphs are there in total?\n"
     "\n"
     "{context}\n"
     "\n"
     "Please enter the final count of unique paragraphs after removing duplicates. The output format "
     "should only contain the number, such as 1, 2, 3, and so on.\n"
     "\n"
     "The final answer is: ",
     32, Metric::count, false, false, false, true},
    {"passage_retrieval_en",
     "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the "
     "abstract is from.\n"
     "\n"
     "{context}\n"
     "\n"
     "The following is an abstract.\n"
     "\n"
     "{input}\n"
     "\n"
     "Please enter the number of the paragraph that the abstract is from. The answer format must be like "
     "\"Paragraph 1\", \"Paragraph 2\", etc.\n"
     "\n"
     "The answer is: ",
     32, Metric::retrieval, false, false, false, true},
    {"passage_retrieval_zh",
     "以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n"
     "\n"
     "{context}\n"
     "\n"
     "下面是一个摘要\n"
     "\n"
     "{input}\n"
     "\n"
     "请输入摘要所属段落的编号。答案格式必须是\"段落1\"，\"段落2\"等格式\n"
     "\n"
     "答案是：",
     32, Metric::retrieval_zh, false, false, false, true},
    {"lcc",
     "Please complete the code given below. \n"
     "{context}Next line of code:\n",
     64, Metric::code_sim, true, false, false, true},
    {"repobench-p",
     "Please complete the code given below. \n"
     "{context}{input}Next line of code:\n",
     64, Metric::code_sim, true, false, false, true},
    // ---- this project's long-context suite (tools/make_longctx_suite.cpp, eval/suite.cpp) ----
    {"passkey",
     "There is an important piece of information hidden inside a lot of irrelevant text. Find it and memorize it. "
     "I will quiz you about it.\n\n{context}\n\n{input}",
     16, Metric::count, false, false, false, false},
    {"niah",
     "Some special magic numbers are hidden inside the following text. Read the text and remember them.\n\n{context}"
     "\n\n{input}",
     // 32, not 16: instruct models restate the question ("The special magic number for keen-maple mentioned in
     // the text is ...") and the 7-digit answer (4+ tokens) came after token 16 for the demo model.
     32, Metric::count, false, false, false, false},
    {"multi_needle",
     "Some special magic numbers are hidden inside the following text. Read the text and remember them.\n\n{context}"
     "\n\n{input}",
     64, Metric::qa_f1, false, false, false, false},
    {"doc_qa",
     "Read the following document and answer the question about it.\n\n{context}\n\nNow answer the question. Only give "
     "the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
     96, Metric::qa_f1, false, false, false, false},
  };
  return table;
}

std::string known_names() {
  std::string out;
  for (const auto& d : dataset_table()) out += (out.empty() ? "" : ", ") + d.name;
  return out;
}

}  // namespace

const LongBenchDataset& longbench_dataset(std::string_view name) {
  for (const auto& d : dataset_table())
    if (d.name == name) return d;
  fail("unknown dataset \"", name, "\"; known datasets: ", known_names());
}

std::vector<std::string> longbench_dataset_names() {
  std::vector<std::string> out;
  for (const auto& d : dataset_table()) out.push_back(d.name);
  return out;
}

LongBenchRecord longbench_parse_record(std::string_view json_line, const std::string& where, size_t line) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_line);
  } catch (const nlohmann::json::exception& e) {
    fail(where, ":", line, ": not valid JSON (", e.what(), "); each line must be one LongBench record");
  }
  if (!j.is_object()) fail(where, ":", line, ": a record must be a JSON object, got ", j.type_name());
  std::string id = j.contains("_id") && j["_id"].is_string() ? j["_id"].get<std::string>() : std::string();
  std::string at = where + ":" + std::to_string(line) + (id.empty() ? "" : " (_id " + id + ")");
  auto need = [&](const char* field) -> const nlohmann::json& {
    if (!j.contains(field))
      fail(at, ": missing field \"", field, "\"; a LongBench record has input, context, answers, all_classes, "
           "length, dataset, _id");
    return j[field];
  };
  auto need_string = [&](const char* field) {
    const auto& v = need(field);
    if (!v.is_string()) fail(at, ": field \"", field, "\" must be a string, got ", v.type_name());
    return v.get<std::string>();
  };
  auto string_list = [&](const char* field, const nlohmann::json& v) {
    if (!v.is_array()) fail(at, ": field \"", field, "\" must be a list of strings, got ", v.type_name());
    std::vector<std::string> out;
    for (const auto& e : v) {
      if (!e.is_string()) fail(at, ": field \"", field, "\" must hold strings only, found ", e.type_name());
      out.push_back(e.get<std::string>());
    }
    return out;
  };
  LongBenchRecord r;
  r.id = need_string("_id");
  r.dataset = need_string("dataset");
  r.input = need_string("input");
  r.context = need_string("context");
  r.answers = string_list("answers", need("answers"));
  const auto& classes = need("all_classes");
  if (!classes.is_null()) r.all_classes = string_list("all_classes", classes);
  const auto& length = need("length");
  if (!length.is_number_integer()) fail(at, ": field \"length\" must be an integer, got ", length.type_name());
  r.length = length.get<int64_t>();
  try {
    const LongBenchDataset& d = longbench_dataset(r.dataset);
    if (d.metric == Metric::classification && !r.all_classes)
      fail("dataset ", d.name, " is scored by classification and needs \"all_classes\"");
  } catch (const Error& e) {
    fail(at, ": ", e.what());
  }
  if (r.context.empty()) fail(at, ": empty \"context\"; every LongBench task reads a context");
  if (r.answers.empty()) fail(at, ": \"answers\" is empty; a record needs at least one reference answer");
  return r;
}

std::vector<LongBenchRecord> longbench_read_jsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open the JSONL file; check the path");
  std::vector<LongBenchRecord> out;
  std::string text;
  size_t line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (text.find_first_not_of(" \t") == std::string::npos) continue;
    out.push_back(longbench_parse_record(text, path, line));
  }
  if (out.empty()) fail(path, ": no records; expected one LongBench JSON record per line");
  return out;
}

std::string longbench_record_json(const LongBenchRecord& r) {
  nlohmann::ordered_json j;
  j["input"] = r.input;
  j["context"] = r.context;
  j["answers"] = r.answers;
  j["length"] = r.length;
  j["dataset"] = r.dataset;
  j["language"] = "en";
  j["all_classes"] = r.all_classes ? nlohmann::ordered_json(*r.all_classes) : nlohmann::ordered_json(nullptr);
  j["_id"] = r.id;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string longbench_format_prompt(std::string_view tmpl, const LongBenchRecord& r) {
  std::string out;
  out.reserve(tmpl.size() + r.context.size() + r.input.size());
  for (size_t i = 0; i < tmpl.size(); ++i) {
    char c = tmpl[i];
    if (c == '}') {
      if (i + 1 < tmpl.size() && tmpl[i + 1] == '}') {
        out.push_back('}');
        ++i;
        continue;
      }
      fail("prompt template: single '}' at offset ", i, "; write \"}}\" for a literal brace");
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (i + 1 < tmpl.size() && tmpl[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    size_t close = tmpl.find('}', i);
    if (close == std::string_view::npos) fail("prompt template: '{' at offset ", i, " is never closed");
    std::string_view field = tmpl.substr(i + 1, close - i - 1);
    if (field == "context") out += r.context;
    else if (field == "input") out += r.input;
    else fail("prompt template: unknown field {", field, "}; supported: {context}, {input}");
    i = close;
  }
  return out;
}

std::vector<int32_t> truncate_middle(const std::vector<int32_t>& ids, size_t max_len) {
  if (max_len < 2) fail("truncate_middle: max_len ", max_len, " is too small to keep a head and a tail; use >= 2");
  if (ids.size() <= max_len) return ids;
  size_t half = max_len / 2;
  std::vector<int32_t> out(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(half));
  out.insert(out.end(), ids.end() - static_cast<std::ptrdiff_t>(half), ids.end());
  return out;
}

std::string longbench_postprocess(const LongBenchDataset& d, std::string_view prediction) {
  if (!d.first_line) return std::string(prediction);
  size_t start = prediction.find_first_not_of('\n');
  if (start == std::string_view::npos) return {};
  std::string_view rest = prediction.substr(start);
  return std::string(rest.substr(0, rest.find('\n')));
}

double longbench_score(const LongBenchDataset& d, std::string_view prediction, const std::vector<std::string>& answers,
                       const std::optional<std::vector<std::string>>& all_classes, FuzzMatcher fm) {
  static const std::vector<std::string> no_classes;
  std::string pred = longbench_postprocess(d, prediction);
  double best = 0.0;
  for (const std::string& a : answers)
    best = std::max(best, metric_score(d.metric, pred, a, all_classes ? *all_classes : no_classes, fm));
  return best;
}

const char* longbench_length_bucket(int64_t length) {
  return length < 4000 ? "0-4k" : length < 8000 ? "4-8k" : "8k+";
}

}  // namespace llm
