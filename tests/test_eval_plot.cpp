// SVG plots: the Pareto front on hand cases, nice ticks, escaping, and that the SVG is well-formed XML (checked by
// a small tag/attribute scanner here, so the test needs no XML library).
#include <doctest/doctest.h>

#include <cctype>
#include <string>
#include <vector>

#include "eval/plot_svg.h"

namespace {

// Well-formedness of the XML subset our SVG uses: prolog, elements with quoted attributes, text with entities,
// balanced tags, exactly one root. Returns "" when fine, else what is wrong.
std::string xml_check(const std::string& s) {
  std::vector<std::string> stack;
  size_t i = 0, roots = 0;
  if (s.rfind("<?xml", 0) == 0) i = s.find("?>") + 2;
  auto bad_entity = [&](size_t at) {
    static const char* ok[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
    for (const char* e : ok)
      if (s.compare(at, std::string(e).size(), e) == 0) return false;
    return true;
  };
  while (i < s.size()) {
    if (s[i] != '<') {
      if (s[i] == '&' && bad_entity(i)) return "bad entity at " + std::to_string(i);
      if (s[i] == '>') return "stray '>' at " + std::to_string(i);
      if (stack.empty() && !std::isspace(static_cast<unsigned char>(s[i]))) return "text outside the root";
      ++i;
      continue;
    }
    if (s[i + 1] == '/') {  // end tag
      size_t e = s.find('>', i);
      std::string name = s.substr(i + 2, e - i - 2);
      if (stack.empty() || stack.back() != name) return "unbalanced </" + name + ">";
      stack.pop_back();
      i = e + 1;
      continue;
    }
    size_t j = i + 1;
    while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == ':' || s[j] == '-')) ++j;
    std::string name = s.substr(i + 1, j - i - 1);
    if (name.empty()) return "empty tag name at " + std::to_string(i);
    std::vector<std::string> attrs;
    while (true) {
      while (j < s.size() && std::isspace(static_cast<unsigned char>(s[j]))) ++j;
      if (j >= s.size()) return "unterminated tag <" + name;
      if (s[j] == '>' || (s[j] == '/' && s[j + 1] == '>')) break;
      size_t k = j;
      while (k < s.size() && (std::isalnum(static_cast<unsigned char>(s[k])) || s[k] == '-' || s[k] == ':')) ++k;
      std::string an = s.substr(j, k - j);
      if (an.empty() || s[k] != '=' || s[k + 1] != '"') return "bad attribute in <" + name + "> at " + std::to_string(j);
      for (const auto& x : attrs)
        if (x == an) return "attribute " + an + " twice in <" + name + ">";
      attrs.push_back(an);
      size_t q = s.find('"', k + 2);
      if (q == std::string::npos) return "unterminated attribute value";
      for (size_t m = k + 2; m < q; ++m) {
        if (s[m] == '<') return "'<' in an attribute value";
        if (s[m] == '&' && bad_entity(m)) return "bad entity in an attribute value";
      }
      j = q + 1;
    }
    if (stack.empty()) ++roots;
    if (s[j] == '/') {
      i = j + 2;
    } else {
      stack.push_back(name);
      i = j + 1;
    }
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  if (roots != 1) return "expected one root element, got " + std::to_string(roots);
  return "";
}

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("pareto_front: hand case (smaller x, larger y are better)") {
  // bytes, score
  std::vector<llm::PlotPoint> p = {
      {100, 50, "a"},  // dominated by d (less bytes, more score)
      {40, 30, "b"},   // front: cheapest
      {60, 45, "c"},   // front
      {80, 55, "d"},   // front
      {80, 40, "e"},   // dominated by d (same x, lower y)
      {200, 55, "f"},  // dominated by d (same y, more bytes)
      {300, 70, "g"},  // front: best score
      {50, 29, "h"},   // dominated by b
  };
  std::vector<size_t> f = llm::pareto_front(p);
  CHECK(f == std::vector<size_t>{1, 2, 3, 6});
  // duplicates: the first one kept
  std::vector<llm::PlotPoint> q = {{1, 1, "x"}, {1, 1, "y"}, {2, 3, "z"}};
  CHECK(llm::pareto_front(q) == std::vector<size_t>{0, 2});
  CHECK(llm::pareto_front({}).empty());
  // a single point is its own front; non-finite points are ignored
  CHECK(llm::pareto_front({{5, 5, ""}}) == std::vector<size_t>{0});
  CHECK(llm::pareto_front({{1, 0.0 / 0.0, ""}, {2, 1, ""}}) == std::vector<size_t>{1});
}

TEST_CASE("plot_ticks: 1/2/5 steps covering the range") {
  CHECK(llm::plot_ticks(0, 100, 5) == std::vector<double>{0, 20, 40, 60, 80, 100});
  CHECK(llm::plot_ticks(0, 1, 4) == std::vector<double>{0, 0.5, 1});
  std::vector<double> t = llm::plot_ticks(3, 7.3, 5);
  CHECK(t.front() >= 3);
  CHECK(t.back() <= 7.3);
  CHECK(t.size() >= 4);
  CHECK(llm::plot_ticks(5, 5).size() >= 2);  // degenerate range widened
}

TEST_CASE("xml_escape") { CHECK(llm::xml_escape("a<b & \"c\" 'd'>") == "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;"); }

TEST_CASE("svg_pareto_plot: well-formed, every point drawn, front highlighted") {
  std::vector<llm::PlotPoint> p = {{100, 50, "svd:k=16,v=16/32/64 <a&b>"}, {40, 30, "b"}, {60, 45, "c"},
                                   {80, 55, "d"},  {300, 70, "g"}};
  llm::PlotOptions o;
  o.title = "quality vs \"bytes\" & more";
  o.x_label = "KV bytes / token";
  o.y_label = "score";
  const std::string svg = llm::svg_pareto_plot(p, o);
  CHECK(xml_check(svg) == "");
  CHECK(count(svg, "<circle") == p.size());
  CHECK(count(svg, "fill=\"#d62728\" stroke=\"black\"") == 4);  // the 4 front points
  CHECK(svg.find("&lt;a&amp;b&gt;") != std::string::npos);
  CHECK(svg.find("quality vs &quot;bytes&quot; &amp; more") != std::string::npos);
  CHECK(svg.size() < 50000);
  CHECK_THROWS(llm::svg_pareto_plot({}, o));
  // the checker itself catches broken XML
  CHECK(xml_check("<svg><g></svg>") != "");
  CHECK(xml_check("<svg a=\"1\" a=\"2\"/>") != "");
  CHECK(xml_check("<svg>a & b</svg>") != "");
}

TEST_CASE("svg_line_plot: one polyline per series with two or more points") {
  std::vector<llm::PlotSeries> s = {{"full", {{512, 40, ""}, {128, 60, ""}, {2048, 20, ""}}, true},
                                    {"svd:k=16", {{512, 45, ""}, {2048, 35, ""}}, true},
                                    {"single", {{1024, 30, ""}}, true}};
  llm::PlotOptions o;
  o.title = "decode";
  const std::string svg = llm::svg_line_plot(s, o);
  CHECK(xml_check(svg) == "");
  CHECK(count(svg, "<polyline") == 2);
  CHECK(count(svg, "<circle") == 6);
  CHECK(svg.find("svd:k=16") != std::string::npos);
}
