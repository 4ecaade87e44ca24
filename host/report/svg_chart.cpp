#include "host/report/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>

namespace snapvk::svg {

std::string escape(const std::string& s);

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string trim_zeros(std::string s) {
  if (s.find('.') == std::string::npos) return s;
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

std::string fmt(double v, int prec) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return trim_zeros(buf);
}

bool finite(double v) { return std::isfinite(v); }

// Ticks 1, 2, 5 x 10^k covering [lo, hi], about `want` of them.
std::vector<double> nice_ticks(double lo, double hi, int want) {
  if (!(hi > lo)) hi = lo + 1;
  const double raw = (hi - lo) / want;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::floor(lo / step) * step; v <= hi + step * 1e-9; v += step)
    t.push_back(std::abs(v) < step * 1e-9 ? 0 : v);
  return t;
}

struct Axis {
  bool log = false;
  double lo = 0, hi = 1;  // in value space (log: both > 0)
  std::vector<double> ticks;
  double frac(double v) const {
    if (log) return (std::log(v) - std::log(lo)) / (std::log(hi) - std::log(lo));
    return (v - lo) / (hi - lo);
  }
};

Axis make_axis(std::vector<double> vals, bool log, Units u, bool from_zero, bool is_x) {
  Axis a;
  a.log = log;
  std::vector<double> v;
  for (double x : vals)
    if (finite(x) && (!log || x > 0)) v.push_back(x);
  if (v.empty()) {
    a.log = false;
    a.lo = 0, a.hi = 1;
    a.ticks = {0, 0.5, 1};
    return a;
  }
  double mn = *std::min_element(v.begin(), v.end()), mx = *std::max_element(v.begin(), v.end());
  if (log) {
    if (is_x) {
      // Ticks at the data values themselves (context lengths), when there are few.
      std::set<double> uniq(v.begin(), v.end());
      if (uniq.size() <= 12) a.ticks.assign(uniq.begin(), uniq.end());
      const double pad = mx > mn ? std::pow(mx / mn, 0.06) : 1.5;
      a.lo = mn / pad, a.hi = mx * pad;
      if (a.ticks.empty()) {
        for (double p = std::pow(2.0, std::floor(std::log2(a.lo))); p <= a.hi; p *= 2)
          if (p >= a.lo) a.ticks.push_back(p);
      }
      return a;
    }
    const double base = (u == Units::Bytes || u == Units::Tokens) ? 2.0 : 10.0;
    // A little room around the data, so no point sits on the frame.
    double e0 = std::floor(std::log(mn) / std::log(base) - 0.12), e1 = std::ceil(std::log(mx) / std::log(base) + 0.12);
    if (e1 <= e0) e1 = e0 + 1;
    int step = 1;
    while ((e1 - e0) / step > 7) ++step;
    // Align the range to the tick step so the axis starts and ends on a tick.
    e0 = std::floor(e0 / step) * step;
    e1 = std::ceil(e1 / step) * step;
    a.lo = std::pow(base, e0), a.hi = std::pow(base, e1);
    for (double e = e0; e <= e1 + 1e-9; e += step) a.ticks.push_back(std::pow(base, e));
    return a;
  }
  if (from_zero) mn = std::min(mn, 0.0), mx = std::max(mx, 0.0);
  if (u == Units::Percent) mn = std::min(mn, 0.0), mx = std::max(mx, 1.0);
  if (mx <= mn) mx = mn + (mn == 0 ? 1 : std::abs(mn) * 0.5);
  a.ticks = nice_ticks(mn, mx, 5);
  a.lo = std::min(mn, a.ticks.front());
  a.hi = std::max(mx, a.ticks.back());
  if (a.ticks.back() < mx) {
    const double step = a.ticks.size() > 1 ? a.ticks[1] - a.ticks[0] : 1;
    a.ticks.push_back(a.ticks.back() + step);
    a.hi = a.ticks.back();
  }
  return a;
}

// Marker shapes cycle with the series index, so coinciding series stay distinguishable.
std::string marker(size_t shape, double cx, double cy, double r, const std::string& color, bool hollow,
                   const std::string& title = "") {
  const std::string fill = hollow ? std::string("white") : color;
  const std::string style = "fill=\"" + fill + "\" stroke=\"" + color + "\" stroke-width=\"1.5\"";
  const std::string tip = title.empty() ? "" : "<title>" + escape(title) + "</title>";
  std::string o;
  switch (shape % 4) {
    case 0: o = "<circle cx=\"" + num(cx) + "\" cy=\"" + num(cy) + "\" r=\"" + num(r) + "\" " + style; break;
    case 1:
      o = "<rect x=\"" + num(cx - r * 0.9) + "\" y=\"" + num(cy - r * 0.9) + "\" width=\"" + num(r * 1.8) +
          "\" height=\"" + num(r * 1.8) + "\" " + style;
      break;
    case 2:
      o = "<path d=\"M" + num(cx) + "," + num(cy - r * 1.2) + " L" + num(cx + r * 1.1) + "," + num(cy + r * 0.8) +
          " L" + num(cx - r * 1.1) + "," + num(cy + r * 0.8) + " Z\" " + style;
      break;
    default:
      o = "<path d=\"M" + num(cx) + "," + num(cy - r * 1.25) + " L" + num(cx + r * 1.25) + "," + num(cy) + " L" +
          num(cx) + "," + num(cy + r * 1.25) + " L" + num(cx - r * 1.25) + "," + num(cy) + " Z\" " + style;
  }
  return tip.empty() ? o + "/>\n"
                     : o + ">" + tip + "</" +
                           (shape % 4 == 0   ? "circle"
                            : shape % 4 == 1 ? "rect"
                                             : "path") +
                           ">\n";
}

}  // namespace

std::string escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string format_tick(double v, Units u) {
  switch (u) {
    case Units::Bytes: {
      const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
      int i = 0;
      while (std::abs(v) >= 1024 && i < 4) v /= 1024, ++i;
      return fmt(v, v < 10 ? 2 : 1) + " " + units[i];
    }
    case Units::Tokens: {
      if (v >= 1024 && std::fmod(v, 1024) == 0) return fmt(v / 1024, 0) + "K";
      if (v >= 1024) return fmt(v / 1024, 1) + "K";
      return fmt(v, 0);
    }
    case Units::Percent: return fmt(v * 100, 0) + "%";
    case Units::Plain:
    default:
      if (std::abs(v) >= 1e6) return fmt(v / 1e6, 1) + "M";
      if (std::abs(v) >= 1e4) return fmt(v / 1e3, 0) + "k";
      return fmt(v, std::abs(v) < 10 ? 2 : (std::abs(v) < 100 ? 1 : 0));
  }
}

std::string palette(size_t i) {
  static const char* c[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                            "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
  return c[i % 10];
}

namespace {

struct LegendItem {
  std::string name, color;
  bool dashed;
};

// The distinct series names in order of appearance, with their colour and style.
std::vector<LegendItem> legend_of(const std::vector<Panel>& panels) {
  std::vector<LegendItem> legend;
  for (const auto& p : panels)
    for (const auto& s : p.series)
      if (std::none_of(legend.begin(), legend.end(), [&](const LegendItem& i) { return i.name == s.name; }))
        legend.push_back({s.name, s.color, s.dashed});
  return legend;
}

// A series' line and markers, styled by its place in the legend: later series are drawn thinner
// and smaller, on top, so that series with the same values still show as nested lines and markers.
template <class Px, class Py>
std::string series_svg(const Series& s, const Panel& p, const std::vector<LegendItem>& legend, const Axis& ax,
                       const Axis& ay, Px px, Py py) {
  std::string o;
  size_t si = 0;
  while (si < legend.size() && legend[si].name != s.name) ++si;
  const double lw = std::max(1.2, 4.0 - 0.8 * double(si)), mr = std::max(2.5, 5.5 - 0.8 * double(si));
  std::string path;
  bool pen = false;
  for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
    if (!finite(s.y[i]) || (ay.log && s.y[i] <= 0) || (ax.log && s.x[i] <= 0)) {
      pen = false;
      continue;
    }
    path += (pen ? " L" : " M") + num(px(s.x[i])) + "," + num(py(s.y[i]));
    pen = true;
  }
  if (!path.empty())
    o += "<path d=\"" + path.substr(1) + "\" fill=\"none\" stroke=\"" + s.color + "\" stroke-width=\"" + num(lw) +
         "\"" + (s.dashed ? " stroke-dasharray=\"6,4\"" : "") + "/>\n";
  for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
    if (!finite(s.y[i]) || (ay.log && s.y[i] <= 0) || (ax.log && s.x[i] <= 0)) continue;
    const bool hollow = i < s.hollow.size() && s.hollow[i];
    o += marker(si, px(s.x[i]), py(s.y[i]), hollow ? mr + 1 : mr, s.color, hollow,
                s.name + ": " + format_tick(s.x[i], p.x_units) + ", " + format_tick(s.y[i], p.y_units));
  }
  return o;
}

// One panel at (ox, oy): title, plot area, grid and ticks, axis labels, reference lines, series.
std::string panel_svg(const Panel& p, int ox, int oy, int pw, int ph, const std::vector<LegendItem>& legend) {
  const int ml = 86, mr = 24, mt = 58, mb = 58;  // plot area margins inside a panel
  std::string o;
  const int x0 = ox + ml, x1 = ox + pw - mr, y0 = oy + mt, y1 = oy + ph - mb;  // plot area (y0 top)
  std::vector<double> xs, ys;
  for (const auto& h : p.hlines) ys.push_back(h.y);
  for (const auto& s : p.series) {
    // Every x, so that panels over the same contexts share their x axis even where a series has no value.
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      xs.push_back(s.x[i]);
      if (finite(s.y[i])) ys.push_back(s.y[i]);
    }
  }
  const Axis ax = make_axis(xs, p.log_x, p.x_units, false, true);
  const Axis ay = make_axis(ys, p.log_y, p.y_units, p.y_from_zero, false);
  auto px = [&](double v) { return x0 + ax.frac(v) * (x1 - x0); };
  auto py = [&](double v) { return y1 - ay.frac(v) * (y1 - y0); };

  o += "<g>\n";
  o += "<text x=\"" + std::to_string(ox + ml) + "\" y=\"" + std::to_string(oy + 22) +
       "\" font-size=\"14\" font-weight=\"bold\">" + escape(p.title) + "</text>\n";
  if (!p.note.empty())
    o += "<text x=\"" + std::to_string(ox + ml) + "\" y=\"" + std::to_string(oy + 39) +
         "\" font-size=\"11\" fill=\"#555\">" + escape(p.note) + "</text>\n";
  o += "<rect x=\"" + std::to_string(x0) + "\" y=\"" + std::to_string(y0) + "\" width=\"" + std::to_string(x1 - x0) +
       "\" height=\"" + std::to_string(y1 - y0) + "\" fill=\"#fafafa\" stroke=\"#999\"/>\n";
  for (double t : ay.ticks) {
    const double yy = py(t);
    if (yy < y0 - 0.5 || yy > y1 + 0.5) continue;
    o += "<line x1=\"" + std::to_string(x0) + "\" y1=\"" + num(yy) + "\" x2=\"" + std::to_string(x1) + "\" y2=\"" +
         num(yy) + "\" stroke=\"#e2e2e2\"/>\n";
    o += "<text x=\"" + std::to_string(x0 - 6) + "\" y=\"" + num(yy + 4) + "\" text-anchor=\"end\">" +
         escape(format_tick(t, p.y_units)) + "</text>\n";
  }
  for (double t : ax.ticks) {
    const double xx = px(t);
    if (xx < x0 - 0.5 || xx > x1 + 0.5) continue;
    o += "<line x1=\"" + num(xx) + "\" y1=\"" + std::to_string(y0) + "\" x2=\"" + num(xx) + "\" y2=\"" +
         std::to_string(y1) + "\" stroke=\"#e2e2e2\"/>\n";
    o += "<text x=\"" + num(xx) + "\" y=\"" + std::to_string(y1 + 17) + "\" text-anchor=\"middle\">" +
         escape(format_tick(t, p.x_units)) + "</text>\n";
  }
  o += "<text x=\"" + std::to_string((x0 + x1) / 2) + "\" y=\"" + std::to_string(y1 + 40) +
       "\" text-anchor=\"middle\">" + escape(p.x_label) + "</text>\n";
  const int ly = (y0 + y1) / 2, lx = ox + 16;
  o += "<text x=\"" + std::to_string(lx) + "\" y=\"" + std::to_string(ly) +
       "\" text-anchor=\"middle\" transform=\"rotate(-90 " + std::to_string(lx) + " " + std::to_string(ly) + ")\">" +
       escape(p.y_label) + "</text>\n";
  for (const auto& h : p.hlines) {
    if (!finite(h.y) || (ay.log && h.y <= 0)) continue;
    const double yy = py(h.y);
    o += "<line x1=\"" + std::to_string(x0) + "\" y1=\"" + num(yy) + "\" x2=\"" + std::to_string(x1) + "\" y2=\"" +
         num(yy) + "\" stroke=\"" + h.color + "\" stroke-width=\"1.5\" stroke-dasharray=\"3,3\"/>\n";
    o += "<text x=\"" + std::to_string(x0 + 6) + "\" y=\"" + num(yy - 5) + "\" fill=\"" + h.color +
         "\" font-size=\"11\">" + escape(h.label) + "</text>\n";
  }
  if (ys.empty())
    o += "<text x=\"" + std::to_string((x0 + x1) / 2) + "\" y=\"" + std::to_string((y0 + y1) / 2) +
         "\" text-anchor=\"middle\" fill=\"#888\">no data</text>\n";

  for (const auto& s : p.series) o += series_svg(s, p, legend, ax, ay, px, py);
  o += "</g>\n";
  return o;
}

}  // namespace

std::string line_charts(const std::string& title, const std::vector<Panel>& panels, int columns,
                        const std::string& subtitle) {
  const int pw = 540, ph = 370;  // one panel
  columns = std::max(1, std::min<int>(columns, int(panels.size())));
  const int rows = int((panels.size() + columns - 1) / columns);

  const std::vector<LegendItem> legend = legend_of(panels);
  const int width = columns * pw + 20;
  const int item_w = 170, per_row = std::max(1, (width - 40) / item_w);
  const int legend_rows = int((legend.size() + per_row - 1) / per_row);
  const int head = 34 + (subtitle.empty() ? 0 : 20) + legend_rows * 22 + 10;
  const int height = head + rows * ph + 10;

  std::string o;
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(width) + "\" height=\"" +
       std::to_string(height) + "\" viewBox=\"0 0 " + std::to_string(width) + " " + std::to_string(height) +
       "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n";
  o += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o += "<text x=\"20\" y=\"24\" font-size=\"17\" font-weight=\"bold\">" + escape(title) + "</text>\n";
  int y = 34;
  if (!subtitle.empty()) {
    o += "<text x=\"20\" y=\"" + std::to_string(y + 10) + "\" fill=\"#444\">" + escape(subtitle) + "</text>\n";
    y += 20;
  }
  for (size_t i = 0; i < legend.size(); ++i) {
    const int lx = 20 + int(i % per_row) * item_w, ly = y + 8 + int(i / per_row) * 22;
    o += "<line x1=\"" + std::to_string(lx) + "\" y1=\"" + std::to_string(ly) + "\" x2=\"" + std::to_string(lx + 26) +
         "\" y2=\"" + std::to_string(ly) + "\" stroke=\"" + legend[i].color + "\" stroke-width=\"2.5\"" +
         (legend[i].dashed ? " stroke-dasharray=\"6,4\"" : "") + "/>\n";
    o += marker(i, lx + 13, ly, 4, legend[i].color, false);
    o += "<text x=\"" + std::to_string(lx + 32) + "\" y=\"" + std::to_string(ly + 4) + "\">" + escape(legend[i].name) +
         "</text>\n";
  }

  for (size_t pi = 0; pi < panels.size(); ++pi)
    o += panel_svg(panels[pi], 10 + int(pi % columns) * pw, head + int(pi / columns) * ph, pw, ph, legend);
  o += "</svg>\n";
  return o;
}

std::string heat_maps(const std::string& title, const std::vector<HeatGrid>& grids, const std::string& x_label,
                      const std::string& y_label, const std::string& subtitle) {
  const int cw = 64, ch = 30, ml = 70, mt = 40, gap = 40;
  auto color = [](double v) -> std::string {
    if (!finite(v)) return "#d0d0d0";
    v = std::clamp(v, 0.0, 1.0);
    // red (#d73027) -> yellow (#fee08b) -> green (#1a9850)
    const double a[3] = {215, 48, 39}, b[3] = {254, 224, 139}, c[3] = {26, 152, 80};
    double r[3];
    for (int i = 0; i < 3; ++i) r[i] = v < 0.5 ? a[i] + (b[i] - a[i]) * v * 2 : b[i] + (c[i] - b[i]) * (v - 0.5) * 2;
    char buf[16];
    std::snprintf(buf, sizeof buf, "#%02x%02x%02x", int(r[0]), int(r[1]), int(r[2]));
    return buf;
  };
  int width = 20, max_h = 0;
  std::vector<int> ox;
  for (const auto& g : grids) {
    ox.push_back(width);
    const int w = ml + int(g.col_labels.size()) * cw;
    width += std::max(w, 200) + gap;
    max_h = std::max(max_h, mt + int(g.row_labels.size()) * ch + 50);
  }
  width = std::max(width, 420);
  const int head = 34 + (subtitle.empty() ? 0 : 20) + 10;
  const int height = head + max_h + 30;
  std::string o;
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(width) + "\" height=\"" +
       std::to_string(height) + "\" viewBox=\"0 0 " + std::to_string(width) + " " + std::to_string(height) +
       "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n";
  o += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o += "<text x=\"20\" y=\"24\" font-size=\"17\" font-weight=\"bold\">" + escape(title) + "</text>\n";
  if (!subtitle.empty()) o += "<text x=\"20\" y=\"44\" fill=\"#444\">" + escape(subtitle) + "</text>\n";
  for (size_t gi = 0; gi < grids.size(); ++gi) {
    const HeatGrid& g = grids[gi];
    const int gx = ox[gi] + ml, gy = head + mt;
    o += "<g>\n<text x=\"" + std::to_string(gx) + "\" y=\"" + std::to_string(head + 18) +
         "\" font-size=\"14\" font-weight=\"bold\">" + escape(g.title) + "</text>\n";
    for (size_t r = 0; r < g.row_labels.size(); ++r) {
      o += "<text x=\"" + std::to_string(gx - 6) + "\" y=\"" + std::to_string(gy + int(r) * ch + ch / 2 + 4) +
           "\" text-anchor=\"end\">" + escape(g.row_labels[r]) + "</text>\n";
      for (size_t c = 0; c < g.col_labels.size(); ++c) {
        const double v =
            r < g.value.size() && c < g.value[r].size() ? g.value[r][c] : std::numeric_limits<double>::quiet_NaN();
        const int x = gx + int(c) * cw, y = gy + int(r) * ch;
        o += "<rect x=\"" + std::to_string(x) + "\" y=\"" + std::to_string(y) + "\" width=\"" + std::to_string(cw) +
             "\" height=\"" + std::to_string(ch) + "\" fill=\"" + color(v) +
             "\" stroke=\"white\" stroke-width=\"2\"/>\n";
        const std::string t = r < g.text.size() && c < g.text[r].size() ? g.text[r][c] : "";
        if (!t.empty())
          o += "<text x=\"" + std::to_string(x + cw / 2) + "\" y=\"" + std::to_string(y + ch / 2 + 4) +
               "\" text-anchor=\"middle\" font-size=\"11\"" +
               (finite(v) && (v < 0.25 || v > 0.75) ? " fill=\"white\" font-weight=\"bold\"" : "") + ">" + escape(t) +
               "</text>\n";
      }
    }
    const int bottom = gy + int(g.row_labels.size()) * ch;
    for (size_t c = 0; c < g.col_labels.size(); ++c)
      o += "<text x=\"" + std::to_string(gx + int(c) * cw + cw / 2) + "\" y=\"" + std::to_string(bottom + 16) +
           "\" text-anchor=\"middle\">" + escape(g.col_labels[c]) + "</text>\n";
    o += "<text x=\"" + std::to_string(gx + int(g.col_labels.size()) * cw / 2) + "\" y=\"" +
         std::to_string(bottom + 36) + "\" text-anchor=\"middle\">" + escape(x_label) + "</text>\n";
    const int lx = ox[gi] + 14, ly = gy + int(g.row_labels.size()) * ch / 2;
    o += "<text x=\"" + std::to_string(lx) + "\" y=\"" + std::to_string(ly) +
         "\" text-anchor=\"middle\" transform=\"rotate(-90 " + std::to_string(lx) + " " + std::to_string(ly) + ")\">" +
         escape(y_label) + "</text>\n</g>\n";
  }
  o += "</svg>\n";
  return o;
}

}  // namespace snapvk::svg
