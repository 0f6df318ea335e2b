// SVG plots (see eval/plot_svg.h). Coordinates are printed with 2 decimals so files stay small and diffable.
#include "eval/plot_svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "loader/error.h"

namespace llm {

std::string xml_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += ch;
    }
  }
  return out;
}

std::vector<size_t> pareto_front(const std::vector<PlotPoint>& points) {
  std::vector<size_t> idx(points.size());
  std::iota(idx.begin(), idx.end(), size_t(0));
  // by x ascending, then y descending, then input order: a sweep keeps each point that beats every y before it
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    if (points[a].x != points[b].x) return points[a].x < points[b].x;
    return points[a].y > points[b].y;
  });
  std::vector<size_t> front;
  for (size_t i : idx) {
    if (!std::isfinite(points[i].x) || !std::isfinite(points[i].y)) continue;
    if (front.empty() || points[i].y > points[front.back()].y) front.push_back(i);
  }
  return front;
}

std::vector<double> plot_ticks(double lo, double hi, int n) {
  if (!(hi > lo)) hi = lo + 1.0;
  const double raw = (hi - lo) / std::max(1, n);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step)
    t.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

namespace {

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

// Concatenation by append: GCC 12 reports a false -Wrestrict on chains of std::string operator+.
template <class... A>
std::string cat(const A&... a) {
  std::string s;
  (s.append(a), ...);
  return s;
}

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  return b;
}

std::string tick_label(double v) {
  char b[32];
  const double a = std::abs(v);
  if (a >= 1e6 || (a > 0 && a < 1e-3)) std::snprintf(b, sizeof b, "%.3g", v);
  else if (a == std::floor(a)) std::snprintf(b, sizeof b, "%.0f", v);
  else std::snprintf(b, sizeof b, "%g", v);
  return b;
}

// Axis frame, ticks, labels; maps data to pixels.
struct Frame {
  double x0, x1, y0, y1;           // data range
  double left = 70, right = 20, top = 40, bottom = 55;
  double w, h;
  std::vector<double> xt, yt;
  Frame(const PlotOptions& o, double xmin, double xmax, double ymin, double ymax) : w(o.width), h(o.height) {
    if (o.width < 200 || o.height < 150) fail("plot: the size ", o.width, "x", o.height, " is too small (>= 200x150)");
    if (o.x_from_zero) xmin = std::min(xmin, 0.0), xmax = std::max(xmax, 0.0);
    if (o.y_from_zero) ymin = std::min(ymin, 0.0), ymax = std::max(ymax, 0.0);
    if (!(xmax > xmin)) xmax = xmin + 1.0;
    if (!(ymax > ymin)) ymax = ymin + 1.0;
    xt = plot_ticks(xmin, xmax);
    yt = plot_ticks(ymin, ymax);
    x0 = std::min(xmin, xt.front()), x1 = std::max(xmax, xt.back());
    y0 = std::min(ymin, yt.front()), y1 = std::max(ymax, yt.back());
  }
  double px(double x) const { return left + (x - x0) / (x1 - x0) * (w - left - right); }
  double py(double y) const { return h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom); }
  std::string open(const PlotOptions& o) const {
    const std::string W = std::to_string(o.width), H = std::to_string(o.height);
    std::string s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    s += cat("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", W, "\" height=\"", H, "\" viewBox=\"0 0 ", W, " ", H,
             "\" font-family=\"sans-serif\" font-size=\"12\">\n");
    s += cat("<rect x=\"0\" y=\"0\" width=\"", W, "\" height=\"", H, "\" fill=\"white\"/>\n");
    s += cat("<text x=\"", num(w / 2), "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">", xml_escape(o.title),
             "</text>\n");
    // grid + ticks
    for (double t : xt) {
      s += cat("<line x1=\"", num(px(t)), "\" y1=\"", num(top), "\" x2=\"", num(px(t)), "\" y2=\"", num(h - bottom),
               "\" stroke=\"#e0e0e0\"/>\n");
      s += cat("<text x=\"", num(px(t)), "\" y=\"", num(h - bottom + 16), "\" text-anchor=\"middle\">",
               xml_escape(tick_label(t)), "</text>\n");
    }
    for (double t : yt) {
      s += cat("<line x1=\"", num(left), "\" y1=\"", num(py(t)), "\" x2=\"", num(w - right), "\" y2=\"", num(py(t)),
               "\" stroke=\"#e0e0e0\"/>\n");
      s += cat("<text x=\"", num(left - 6), "\" y=\"", num(py(t) + 4), "\" text-anchor=\"end\">",
               xml_escape(tick_label(t)), "</text>\n");
    }
    s += cat("<rect x=\"", num(left), "\" y=\"", num(top), "\" width=\"", num(w - left - right), "\" height=\"",
             num(h - top - bottom), "\" fill=\"none\" stroke=\"black\"/>\n");
    s += cat("<text x=\"", num(left + (w - left - right) / 2), "\" y=\"", num(h - 14), "\" text-anchor=\"middle\">",
             xml_escape(o.x_label), "</text>\n");
    s += cat("<text transform=\"translate(16 ", num(top + (h - top - bottom) / 2),
             ") rotate(-90)\" text-anchor=\"middle\">", xml_escape(o.y_label), "</text>\n");
    return s;
  }
};

void ranges(const std::vector<PlotPoint>& pts, double& xmin, double& xmax, double& ymin, double& ymax) {
  for (const auto& p : pts) {
    if (!std::isfinite(p.x) || !std::isfinite(p.y)) continue;
    xmin = std::min(xmin, p.x), xmax = std::max(xmax, p.x);
    ymin = std::min(ymin, p.y), ymax = std::max(ymax, p.y);
  }
}

std::string circle(const Frame& f, const PlotPoint& p, double r, const char* fill, const char* stroke) {
  std::string s = cat("<circle cx=\"", num(f.px(p.x)), "\" cy=\"", num(f.py(p.y)), "\" r=\"", num(r), "\" fill=\"",
                      fill, "\" stroke=\"", stroke, "\"");
  if (p.label.empty()) return s + "/>\n";
  s += cat("><title>", xml_escape(p.label), "</title></circle>\n");
  return s;
}

std::string legend(const Frame& f, const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string s;
  double y = f.top + 14;
  for (const auto& [name, color] : entries) {
    s += cat("<rect x=\"", num(f.w - f.right - 170), "\" y=\"", num(y - 9), "\" width=\"10\" height=\"10\" fill=\"",
             color, "\"/>\n");
    s += cat("<text x=\"", num(f.w - f.right - 155), "\" y=\"", num(y), "\">", xml_escape(name), "</text>\n");
    y += 16;
  }
  return s;
}

}  // namespace

std::string svg_pareto_plot(const std::vector<PlotPoint>& points, const PlotOptions& o) {
  if (points.empty()) fail("plot: no points to draw");
  double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
  ranges(points, xmin, xmax, ymin, ymax);
  if (xmin > xmax) fail("plot: no finite point to draw");
  Frame f(o, xmin, xmax, ymin, ymax);
  std::string s = f.open(o);
  const std::vector<size_t> front = pareto_front(points);
  // the front as a staircase: from each front point right at its y until the next point's x, then up
  std::string path;
  for (size_t k = 0; k < front.size(); ++k) {
    const PlotPoint& p = points[front[k]];
    if (k == 0) path += cat("M", num(f.px(p.x)), " ", num(f.py(p.y)));
    else path += cat(" H", num(f.px(p.x)), " V", num(f.py(p.y)));
  }
  if (!front.empty()) path += cat(" H", num(f.px(f.x1)));
  s += cat("<path d=\"", path, "\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\" stroke-dasharray=\"5 3\"/>\n");
  std::vector<bool> on(points.size(), false);
  for (size_t i : front) on[i] = true;
  for (size_t i = 0; i < points.size(); ++i)
    if (!on[i] && std::isfinite(points[i].x) && std::isfinite(points[i].y))
      s += circle(f, points[i], 3.5, "#1f77b4", "none");
  for (size_t i : front) s += circle(f, points[i], 5, "#d62728", "black");
  s += legend(f, {{"setting", "#1f77b4"}, {"Pareto front", "#d62728"}});
  return s + "</svg>\n";
}

std::string svg_line_plot(const std::vector<PlotSeries>& series, const PlotOptions& o) {
  double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
  for (const auto& sr : series) ranges(sr.points, xmin, xmax, ymin, ymax);
  if (xmin > xmax) fail("plot: no finite point to draw");
  Frame f(o, xmin, xmax, ymin, ymax);
  std::string s = f.open(o);
  std::vector<std::pair<std::string, std::string>> entries;
  for (size_t k = 0; k < series.size(); ++k) {
    const char* color = kColors[k % (sizeof kColors / sizeof kColors[0])];
    std::vector<PlotPoint> pts = series[k].points;
    std::stable_sort(pts.begin(), pts.end(), [](const auto& a, const auto& b) { return a.x < b.x; });
    if (series[k].lines && pts.size() > 1) {
      std::string d;
      for (const auto& p : pts) d += cat(d.empty() ? "" : " ", num(f.px(p.x)), ",", num(f.py(p.y)));
      s += cat("<polyline points=\"", d, "\" fill=\"none\" stroke=\"", color, "\" stroke-width=\"1.5\"/>\n");
    }
    for (const auto& p : pts) s += circle(f, p, 3.5, color, "none");
    entries.emplace_back(series[k].name, color);
  }
  s += legend(f, entries);
  return s + "</svg>\n";
}

}  // namespace llm
