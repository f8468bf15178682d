// The registry of exception types a task's exception is thrown again as (errors.hpp).
#include <multiproc/errors.hpp>

#include <cxxabi.h>
#include <cstdlib>
#include <map>
#include <mutex>

namespace multiproc {
namespace detail {
namespace {

std::string demangle(const std::type_info& type) {
  int status = 0;
  char* demangled = abi::__cxa_demangle(type.name(), nullptr, nullptr, &status);
  std::string name = (status == 0 && demangled) ? demangled : type.name();
  std::free(demangled);
  return name;
}

template <class E>
std::exception_ptr make_standard(RemoteErrorInfo&& info) {
  return std::make_exception_ptr(RemoteException<E>(std::move(info)));
}

struct Registry {
  std::mutex mu;
  std::map<std::string, RemoteExceptionFactory, std::less<>> by_name;
  Registry() {
    // The standard exceptions whose constructor takes the message. Others (std::bad_alloc,
    // std::system_error...) arrive as RemoteError: they cannot be rebuilt from a message alone.
    add<std::logic_error>();
    add<std::invalid_argument>();
    add<std::domain_error>();
    add<std::length_error>();
    add<std::out_of_range>();
    add<std::runtime_error>();
    add<std::range_error>();
    add<std::overflow_error>();
    add<std::underflow_error>();
  }
  template <class E>
  void add() {
    by_name[demangle(typeid(E))] = &make_standard<E>;
  }
};

Registry& registry() {
  static Registry* r = new Registry;  // never destroyed: results may be read during exit
  return *r;
}

}  // namespace

void register_remote_exception(const std::type_info& type, RemoteExceptionFactory make) {
  std::string name = demangle(type);
  std::lock_guard lk(registry().mu);
  registry().by_name[std::move(name)] = make;
}

}  // namespace detail

std::exception_ptr make_remote_exception(RemoteErrorInfo info) {
  detail::RemoteExceptionFactory make = nullptr;
  {
    auto& r = detail::registry();
    std::lock_guard lk(r.mu);
    auto it = r.by_name.find(info.type_name());
    if (it != r.by_name.end()) make = it->second;
  }
  if (make) {
    try {
      return make(std::move(info));
    } catch (...) {
      // A registered type whose constructor threw: the caller still gets the task's error.
      return std::current_exception();
    }
  }
  return std::make_exception_ptr(RemoteError(std::move(info)));
}

}  // namespace multiproc
