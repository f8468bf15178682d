#include <multiproc/detail/progress.hpp>

#include <unistd.h>
#include <cmath>
#include <cstdio>

namespace multiproc::detail {
namespace {

std::string format_seconds(double s) {
  if (s < 0 || s > 1e7) return "?";
  long t = std::lround(s);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

std::string format_rate(double r) {
  char buf[32];
  if (r >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2fM/s", r / 1e6);
  else if (r >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1fk/s", r / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.1f/s", r);
  return buf;
}

}  // namespace

ProgressBar::ProgressBar(std::string label, size_t total)
    : label_(std::move(label)),
      total_(total),
      tty_(isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()) {}

std::string ProgressBar::render(size_t done) const {
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0;
  // Built with append(): g++ 12 at -O3 warns falsely (-Wrestrict) on chains of operator+.
  std::string line = label_;
  line.append(": ");
  if (total_) {
    int pct = static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total_));
    constexpr int kWidth = 20;
    int fill = pct * kWidth / 100;
    line.append(std::to_string(pct)).append("% |").append(static_cast<size_t>(fill), '#');
    line.append(static_cast<size_t>(kWidth - fill), ' ').append("| ").append(std::to_string(done));
    line.append("/").append(std::to_string(total_));
  } else {
    line.append(std::to_string(done));
  }
  line.append(" [").append(format_seconds(elapsed));
  if (total_ && rate > 0)
    line.append("<").append(
        format_seconds(static_cast<double>(total_ - std::min(done, total_)) / rate));
  line.append(", ").append(format_rate(rate)).append("]");
  return line;
}

void ProgressBar::update(size_t done) {
  if (finished_) return;
  auto now = std::chrono::steady_clock::now();
  auto gap = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(5000);
  if (last_draw_ != std::chrono::steady_clock::time_point{} && now - last_draw_ < gap) return;
  last_draw_ = now;
  std::string line = render(done);
  if (tty_)
    std::fprintf(stderr, "\r%s\033[K", line.c_str());
  else
    std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

void ProgressBar::finish(size_t done) {
  if (finished_) return;
  finished_ = true;
  std::string line = render(done);
  std::fprintf(stderr, tty_ ? "\r%s\033[K\n" : "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace multiproc::detail
