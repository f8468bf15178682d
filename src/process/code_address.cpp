#include <multiproc/detail/code_address.hpp>

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <mutex>
#include <unordered_map>

#include <multiproc/errors.hpp>

namespace multiproc::detail {
namespace {

struct MainProgram {
  uintptr_t bias = 0;
  bool found = false;
};

int find_main(dl_phdr_info* info, size_t, void* data) {
  auto* m = static_cast<MainProgram*>(data);
  // The first object dl_iterate_phdr reports is the main program (its name is empty).
  if (!m->found) {
    m->bias = info->dlpi_addr;
    m->found = true;
  }
  return 1;
}

struct FindByName {
  const std::string* name;
  uintptr_t bias = 0;
  bool found = false;
};

int find_named(dl_phdr_info* info, size_t, void* data) {
  auto* f = static_cast<FindByName*>(data);
  if (info->dlpi_name && *f->name == info->dlpi_name) {
    f->bias = info->dlpi_addr;
    f->found = true;
    return 1;
  }
  return 0;
}

uintptr_t main_bias() {
  static const uintptr_t bias = [] {
    MainProgram m;
    dl_iterate_phdr(find_main, &m);
    return m.bias;
  }();
  return bias;
}

// Encoding is on the pool's dispatch path: remember what we already looked up.
std::mutex g_cache_mu;
[[maybe_unused]] const int g_atfork = pthread_atfork(
    [] { g_cache_mu.lock(); }, [] { g_cache_mu.unlock(); }, [] { g_cache_mu.unlock(); });
std::unordered_map<const void*, CodeAddress>& cache() {
  static auto* c = new std::unordered_map<const void*, CodeAddress>;
  return *c;
}

}  // namespace

CodeAddress encode_code_address(const void* address) {
  {
    std::lock_guard lk(g_cache_mu);
    auto it = cache().find(address);
    if (it != cache().end()) return it->second;
  }
  Dl_info info{};
  link_map* lm = nullptr;
  if (dladdr1(address, &info, reinterpret_cast<void**>(&lm), RTLD_DL_LINKMAP) == 0 || !lm)
    throw ProcessError(
        "cannot send this function to another process: its address is not in any "
        "loaded module");
  CodeAddress code;
  uintptr_t a = reinterpret_cast<uintptr_t>(address);
  if (lm->l_addr == main_bias() && (lm->l_name == nullptr || lm->l_name[0] == 0)) {
    code.module.clear();
  } else {
    code.module = lm->l_name ? lm->l_name : "";
  }
  code.offset = a - lm->l_addr;
  std::lock_guard lk(g_cache_mu);
  cache().emplace(address, code);
  return code;
}

const void* decode_code_address(const CodeAddress& code) {
  if (code.module.empty()) return reinterpret_cast<const void*>(main_bias() + code.offset);
  FindByName f{&code.module};
  dl_iterate_phdr(find_named, &f);
  if (!f.found)
    throw ProcessError("cannot run a function from module '" + code.module +
                       "': the module is not loaded in this process");
  return reinterpret_cast<const void*>(f.bias + code.offset);
}

}  // namespace multiproc::detail
