// A user class hosted by a Manager's server (CPython's BaseManager.register): the class stays
// ordinary C++; one line says which member functions a proxy may call, one registers it under a
// typeid with the function that makes it. Workers of a spawn pool share one Account through its
// proxy: each call is a request the server runs, one at a time.
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include <multiproc/multiproc.hpp>

namespace mp = multiproc;

class Account {
 public:
  explicit Account(std::string owner) : owner_(std::move(owner)) {}
  void deposit(long cents) { balance_ += cents; }
  void withdraw(long cents) {
    if (cents > balance_) throw std::runtime_error("insufficient funds");
    balance_ -= cents;
  }
  long balance() const { return balance_; }
  std::string owner() const { return owner_; }

 private:
  std::string owner_;
  long balance_ = 0;
};

// What a proxy exposes; deriving only to give the calls names.
struct AccountProxy : mp::Proxy<Account, &Account::deposit, &Account::withdraw, &Account::balance,
                                &Account::owner> {
  using Proxy::Proxy;
  void deposit(long cents) { call<&Account::deposit>(cents); }
  void withdraw(long cents) { call<&Account::withdraw>(cents); }
  long balance() const { return call<&Account::balance>(); }
};

// The registered callable: make<AccountProxy>("Account", owner) runs it in the server.
Account open_account(std::string owner) {
  return Account(std::move(owner));
}

long pay_in(AccountProxy account, long cents) {
  account.deposit(cents);
  return cents;
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::set_start_method(mp::StartMethod::spawn);
  mp::Registry registry;
  registry.add<AccountProxy, &open_account>("Account");
  mp::Manager manager(registry);
  AccountProxy account = manager.make<AccountProxy>("Account", std::string("ada"));
  {
    mp::Pool pool(4);
    std::vector<std::tuple<AccountProxy, long>> jobs;
    for (long i = 1; i <= 10; ++i) jobs.emplace_back(account, i * 100);
    pool.starmap(pay_in, jobs);
  }
  std::printf("%s has %ld cents\n", account.call<&Account::owner>().c_str(), account.balance());
  try {
    account.withdraw(1'000'000);
  } catch (const mp::ProcessError& e) {
    std::printf("withdraw refused: %s\n", e.what());
  }
  return account.balance() == 5500 ? 0 : 1;
}
