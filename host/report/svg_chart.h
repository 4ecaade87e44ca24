#pragma once
// Hand-rolled SVG charts for reports (snapvk profile, snapvk eval needle): line charts with
// linear or logarithmic axes, and heat-map grids. No dependencies; the output opens in any
// browser and embeds in HTML as it is.
#include <cstdint>
#include <string>
#include <vector>

namespace snapvk::svg {

// Escapes &, <, >, " for text and attribute values.
std::string escape(const std::string& s);

enum class Units {
  Plain,    // 1.5, 20, 1000
  Bytes,    // 64 KiB, 1.5 GiB (binary units)
  Tokens,   // 512, 1K, 128K (binary thousands, as context lengths are written)
  Percent,  // values in [0, 1] shown as 0%..100%
};
std::string format_tick(double v, Units u);

struct Series {
  std::string name;
  std::string color;         // CSS colour
  std::vector<double> x, y;  // points; NaN y: no point (the line breaks there)
  std::vector<bool> hollow;  // per point: drawn as an open marker (an estimate); empty: none
  bool dashed = false;
};

struct Panel {
  std::string title, x_label, y_label;
  Units x_units = Units::Tokens, y_units = Units::Plain;
  bool log_x = true, log_y = false;
  bool y_from_zero = true;  // linear y: include 0
  std::vector<Series> series;
  std::string note;  // one line under the title (e.g. "hollow markers: estimated")
  struct HLine {
    double y;
    std::string label, color = "#c00";
  };
  std::vector<HLine> hlines;  // dashed horizontal reference lines (e.g. a memory budget)
};

// Panels in a grid of `columns`, one shared legend (the series names of all panels) on top.
std::string line_charts(const std::string& title, const std::vector<Panel>& panels, int columns = 2,
                        const std::string& subtitle = "");

struct HeatGrid {
  std::string title;                           // e.g. the policy
  std::vector<std::string> col_labels;         // x (contexts)
  std::vector<std::string> row_labels;         // y (depths), top to bottom
  std::vector<std::vector<double>> value;      // [row][col] in [0, 1]; NaN: no value (grey)
  std::vector<std::vector<std::string>> text;  // [row][col] text in the cell (may be empty)
};

// One heat map per grid, side by side; red (0) to green (1).
std::string heat_maps(const std::string& title, const std::vector<HeatGrid>& grids, const std::string& x_label,
                      const std::string& y_label, const std::string& subtitle = "");

// A default colour for the i-th series (Tableau 10).
std::string palette(size_t i);

}  // namespace snapvk::svg
