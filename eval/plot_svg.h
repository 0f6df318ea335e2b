// SVG plots written by the project's own code (issue 8): quality against KV bytes with the Pareto front, and
// decode speed against context length. Plain SVG 1.1 text, no scripts, no external resources.
#pragma once
#include <string>
#include <vector>

namespace llm {

struct PlotPoint {
  double x = 0.0, y = 0.0;
  std::string label;  // shown as a tooltip (<title>); may be empty
};

struct PlotSeries {
  std::string name;  // legend entry
  std::vector<PlotPoint> points;
  bool lines = true;  // join the points (sorted by x) with a polyline
};

struct PlotOptions {
  std::string title, x_label, y_label;
  int width = 640, height = 420;
  bool x_from_zero = true, y_from_zero = true;  // include 0 in the axis range
};

// Indices of the Pareto-optimal points when smaller x and larger y are better (a point is dropped when another
// has x <= and y >= with at least one strict), sorted by ascending x. Equal points: the first one is kept.
std::vector<size_t> pareto_front(const std::vector<PlotPoint>& points);

// Scatter of `points` with the Pareto front drawn as a step line and its points highlighted.
std::string svg_pareto_plot(const std::vector<PlotPoint>& points, const PlotOptions& o);
// One line per series (e.g. decode tok/s against context tokens, one series per KV spec).
std::string svg_line_plot(const std::vector<PlotSeries>& series, const PlotOptions& o);

// "Nice" axis ticks covering [lo, hi] (about `n` of them, steps of 1, 2 or 5 x 10^k). Exposed for tests.
std::vector<double> plot_ticks(double lo, double hi, int n = 5);
// XML text escaping (& < > " ').
std::string xml_escape(const std::string& s);

}  // namespace llm
