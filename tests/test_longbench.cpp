// LongBench protocol (eval/longbench.h): the per-dataset tables, prompt formatting, middle truncation, the JSONL
// reader and its errors, post-processing.
#include <doctest/doctest.h>

#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <fstream>

#include "eval/longbench.h"
#include "eval/report.h"
#include "loader/error.h"
#include "test_util.h"

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const llm::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// A temporary JSONL file, removed at scope exit.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& text, const std::string& name) {
    path = (std::filesystem::temp_directory_path() / ("llm_test_" + name + ".jsonl")).string();
    std::ofstream(path, std::ios::binary) << text;
  }
  ~TempFile() { std::filesystem::remove(path); }
};

const char* k_good =
    R"({"input": "Who wrote it?", "context": "Passage 1: Ann wrote it.", "answers": ["Ann"], "length": 4,)"
    R"( "dataset": "hotpotqa", "language": "en", "all_classes": null, "_id": "abc123"})";

}  // namespace

TEST_CASE("longbench: dataset table holds LongBench's facts") {
  CHECK(llm::longbench_dataset_names().size() == 21 + 4);
  const auto& hq = llm::longbench_dataset("hotpotqa");
  CHECK(hq.max_gen == 32);
  CHECK(hq.metric == llm::Metric::qa_f1);
  CHECK_FALSE(hq.skip_chat);
  CHECK(hq.prompt.rfind("Answer the question based on the given passages.", 0) == 0);
  CHECK(hq.prompt.find("Question: {input}\nAnswer:") != std::string::npos);
  CHECK(llm::longbench_dataset("gov_report").max_gen == 512);
  CHECK(llm::longbench_dataset("gov_report").metric == llm::Metric::rouge_l);
  CHECK(llm::longbench_dataset("lcc").prompt ==
        "Please complete the code given below. \n{context}Next line of code:\n");
  CHECK(llm::longbench_dataset("passage_count").metric == llm::Metric::count);
  CHECK(llm::longbench_dataset("passage_retrieval_en").metric == llm::Metric::retrieval);
  CHECK(llm::longbench_dataset("trec").metric == llm::Metric::classification);
  for (const char* name : {"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"})
    CHECK(llm::longbench_dataset(name).skip_chat);
  for (const char* name : {"trec", "triviaqa", "samsum", "lsht"}) CHECK(llm::longbench_dataset(name).first_line);
  CHECK_FALSE(llm::longbench_dataset("lcc").first_line);
  CHECK(llm::longbench_dataset("samsum").stop_at_newline);
  int skip = 0;
  for (const auto& n : llm::longbench_dataset_names()) skip += llm::longbench_dataset(n).skip_chat;
  CHECK(skip == 6);
  for (const char* ours : {"passkey", "niah", "multi_needle", "doc_qa"}) {
    const auto& d = llm::longbench_dataset(ours);
    CHECK_FALSE(d.from_longbench);
    CHECK(d.prompt.find("{context}") != std::string::npos);
    CHECK(d.prompt.find("{input}") != std::string::npos);
  }
  std::string e = error_of([] { llm::longbench_dataset("hotpot"); });
  CHECK(e.find("unknown dataset \"hotpot\"") != std::string::npos);
  CHECK(e.find("hotpotqa") != std::string::npos);
  CHECK(e.find("repobench-p") != std::string::npos);
}

TEST_CASE("longbench: the tables equal LongBench's config files and eval.py (goldens)") {
  // tests/data/eval/metric_goldens.json carries LongBench's dataset2prompt.json, dataset2maxlen.json and the metric
  // function of eval.py's dataset2metric, read by tools/make_metric_goldens.py from a LongBench checkout.
  std::ifstream in(llm_test::data_path("eval/metric_goldens.json"));
  REQUIRE(in.good());
  auto cfg = nlohmann::json::parse(in)["longbench_config"];
  const std::map<std::string, llm::Metric> by_function = {
      {"qa_f1_score", llm::Metric::qa_f1},           {"qa_f1_zh_score", llm::Metric::qa_f1_zh},
      {"rouge_score", llm::Metric::rouge_l},         {"rouge_zh_score", llm::Metric::rouge_zh},
      {"classification_score", llm::Metric::classification}, {"retrieval_score", llm::Metric::retrieval},
      {"retrieval_zh_score", llm::Metric::retrieval_zh}, {"count_score", llm::Metric::count},
      {"code_sim_score", llm::Metric::code_sim}};
  size_t n = 0;
  for (const auto& item : cfg["dataset2prompt"].items()) {  // no structured binding: INFO captures by lambda
    const std::string name = item.key();
    const auto& prompt = item.value();
    INFO(name);
    const auto& d = llm::longbench_dataset(name);
    CHECK(d.from_longbench);
    CHECK(d.prompt == prompt.get<std::string>());
    CHECK(d.max_gen == cfg["dataset2maxlen"][name].get<int>());
    CHECK(d.metric == by_function.at(cfg["dataset2metric"][name].get<std::string>()));
    ++n;
  }
  CHECK(n == 21);
  size_t ours_from_longbench = 0;
  for (const auto& name : llm::longbench_dataset_names())
    ours_from_longbench += llm::longbench_dataset(name).from_longbench;
  CHECK(ours_from_longbench == n);
}

TEST_CASE("longbench: prompt formatting") {
  llm::LongBenchRecord r;
  r.context = "CTX {with braces}";
  r.input = "Q?";
  CHECK(llm::longbench_format_prompt("A {context} B {input} C", r) == "A CTX {with braces} B Q? C");
  CHECK(llm::longbench_format_prompt("{{literal}} {input}", r) == "{literal} Q?");
  CHECK(llm::longbench_format_prompt(llm::longbench_dataset("repobench-p").prompt, r) ==
        "Please complete the code given below. \nCTX {with braces}Q?Next line of code:\n");
  CHECK(error_of([&] { llm::longbench_format_prompt("{length}", r); }).find("unknown field {length}") !=
        std::string::npos);
  CHECK_THROWS_AS(llm::longbench_format_prompt("x } y", r), llm::Error);
  CHECK_THROWS_AS(llm::longbench_format_prompt("x { y", r), llm::Error);
}

TEST_CASE("longbench: middle truncation keeps the first and last half") {
  std::vector<int32_t> ids(10);
  for (int i = 0; i < 10; ++i) ids[static_cast<size_t>(i)] = i;
  CHECK(llm::truncate_middle(ids, 10) == ids);
  CHECK(llm::truncate_middle(ids, 20) == ids);
  CHECK(llm::truncate_middle(ids, 4) == std::vector<int32_t>{0, 1, 8, 9});
  CHECK(llm::truncate_middle(ids, 5) == std::vector<int32_t>{0, 1, 8, 9});  // int(5/2) = 2 each side
  CHECK(llm::truncate_middle(ids, 2) == std::vector<int32_t>{0, 9});
  CHECK_THROWS_AS(llm::truncate_middle(ids, 1), llm::Error);
}

TEST_CASE("longbench: post-processing and scoring") {
  const auto& tq = llm::longbench_dataset("triviaqa");
  CHECK(llm::longbench_postprocess(tq, "\n\nParis\nmore") == "Paris");
  CHECK(llm::longbench_postprocess(tq, "\n\n") == "");
  CHECK(llm::longbench_postprocess(llm::longbench_dataset("hotpotqa"), "a\nb") == "a\nb");
  CHECK(llm::longbench_score(tq, "Paris\nLondon", {"London", "Paris"}, std::nullopt) == 1.0);
  CHECK(llm::longbench_score(tq, "Rome", {"London", "Paris"}, std::nullopt) == 0.0);
  CHECK(llm::longbench_score(llm::longbench_dataset("passkey"), "The pass key is 12345.", {"12345"}, std::nullopt) ==
        1.0);
  CHECK(std::string(llm::longbench_length_bucket(3999)) == "0-4k");
  CHECK(std::string(llm::longbench_length_bucket(4000)) == "4-8k");
  CHECK(std::string(llm::longbench_length_bucket(9000)) == "8k+");
}

TEST_CASE("longbench: JSONL reader") {
  TempFile f(std::string(k_good) + "\n\n" + k_good + "\n", "good");
  auto recs = llm::longbench_read_jsonl(f.path);
  REQUIRE(recs.size() == 2);
  CHECK(recs[0].id == "abc123");
  CHECK(recs[0].answers == std::vector<std::string>{"Ann"});
  CHECK_FALSE(recs[0].all_classes.has_value());
  CHECK(recs[0].length == 4);
  // Round trip through the writer.
  auto again = llm::longbench_parse_record(llm::longbench_record_json(recs[0]), "mem", 1);
  CHECK(again.context == recs[0].context);
  CHECK(again.input == recs[0].input);
  CHECK(again.dataset == recs[0].dataset);
}

TEST_CASE("longbench: bad records give errors naming the file, line and _id") {
  auto bad = [](const std::string& line) {
    TempFile f(std::string(k_good) + "\n" + line + "\n", "bad");
    return std::make_pair(error_of([&] { llm::longbench_read_jsonl(f.path); }), f.path);
  };
  auto check = [&](const std::string& line, const std::string& what, bool has_id = true) {
    auto result = bad(line);
    const std::string& e = result.first;
    const std::string& path = result.second;
    INFO(e);
    CHECK(e.find(path + ":2") != std::string::npos);
    if (has_id) CHECK(e.find("_id x9") != std::string::npos);
    CHECK(e.find(what) != std::string::npos);
  };
  std::string base = k_good;
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = base;
    s.replace(s.find("abc123"), 6, "x9");
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  check(with(R"("answers": ["Ann"], )", ""), "missing field \"answers\"");
  check(with(R"("dataset": "hotpotqa")", R"("dataset": "nosuch")"), "unknown dataset \"nosuch\"");
  check(with(R"("context": "Passage 1: Ann wrote it.")", R"("context": "")"), "empty \"context\"");
  check(with(R"("answers": ["Ann"])", R"("answers": "Ann")"), "\"answers\" must be a list");
  check(with(R"("answers": ["Ann"])", R"("answers": [1])"), "must hold strings only");
  check(with(R"("answers": ["Ann"])", R"("answers": [])"), "\"answers\" is empty");
  check(with(R"("length": 4)", R"("length": "4")"), "\"length\" must be an integer");
  check(with(R"("all_classes": null)", R"("all_classes": 3)"), "\"all_classes\" must be a list");
  check(with(R"("dataset": "hotpotqa")", R"("dataset": "trec")"), "needs \"all_classes\"");
  check(with(R"("input": "Who wrote it?", )", ""), "missing field \"input\"");
  check("{not json", "not valid JSON", false);
  check("[1, 2]", "must be a JSON object", false);
  check(with(R"(, "_id": "x9")", ""), "missing field \"_id\"", false);
  CHECK(error_of([] { llm::longbench_read_jsonl("/nonexistent/file.jsonl"); }).find("cannot open") !=
        std::string::npos);
  TempFile empty("\n\n", "empty");
  CHECK(error_of([&] { llm::longbench_read_jsonl(empty.path); }).find("no records") != std::string::npos);
}

TEST_CASE("report: per-task scores, LongBench-E buckets, average") {
  std::vector<llm::EvalRecordResult> rs = {
      {"a", "hotpotqa", 100, 1.0, ""}, {"b", "hotpotqa", 5000, 0.5, ""},
      {"c", "trec", 9000, 1.0, ""},    {"d", "trec", 9000, 0.0, ""},
  };
  auto s = llm::eval_summarize(rs);
  REQUIRE(s.tasks.size() == 2);
  CHECK(s.tasks[0].dataset == "hotpotqa");
  CHECK(s.tasks[0].n == 2);
  CHECK(s.tasks[0].score == 75.0);
  CHECK(s.tasks[0].bucket_score[0] == 100.0);
  CHECK(s.tasks[0].bucket_score[1] == 50.0);
  CHECK(s.tasks[0].bucket_n[2] == 0);
  CHECK(s.tasks[1].score == 50.0);
  CHECK(s.tasks[1].bucket_n[2] == 2);
  CHECK(s.average == 62.5);
  CHECK(llm::eval_summarize({{"x", "niah", 10, 1.0 / 3.0, ""}}).tasks[0].score == 33.33);
  auto j = nlohmann::json::parse(llm::eval_summary_json(s));
  CHECK(j["tasks"]["hotpotqa"]["score"] == 75.0);
  CHECK(j["tasks"]["hotpotqa"]["8k+"].is_null());
  CHECK(j["average"] == 62.5);
  std::string table = llm::eval_summary_table(s);
  CHECK(table.find("hotpotqa") != std::string::npos);
  CHECK(table.find("62.50") != std::string::npos);
}

TEST_CASE("report: progress line") {
  llm::Progress p;
  p.total = 4;
  p.out = std::tmpfile();
  REQUIRE(p.out != nullptr);
  p.step("first");
  std::string l = p.line("note");
  CHECK(l.rfind("[######..................] 1/4  25%", 0) == 0);
  CHECK(l.find("ETA") != std::string::npos);
  CHECK(l.find("note") != std::string::npos);
  p.step();
  p.step();
  p.step();
  CHECK(p.line("").find("4/4 100%") != std::string::npos);
  CHECK(p.line("").find("ETA") == std::string::npos);
  p.finish();
  std::fclose(p.out);
}
