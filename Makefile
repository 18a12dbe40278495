# The two commands a newcomer needs: `make run` (the seed example) and
# `make test` (everything CI checks). Both install what they need first.

CARGO ?= cargo

.PHONY: run test setup install-nats-server check-c-guest-tools install-c-guest-tools lint bench examples fanout untrusted typed cluster

setup:
	rustup target add wasm32-wasip1
	@command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || $(MAKE) --no-print-directory install-nats-server
	@$(MAKE) --no-print-directory check-c-guest-tools 2>/dev/null || $(MAKE) --no-print-directory install-c-guest-tools

# The C guest (guest-tasks/c) is built by the tests with clang and wasi-libc.
check-c-guest-tools:
	@printf 'int x;\n' | clang --target=wasm32-wasi -mexec-model=reactor -x c -o /dev/null - >/dev/null 2>&1

install-c-guest-tools:
	@SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  PACKAGES="clang lld wasi-libc libclang-rt-dev-wasm32"; \
	  $$SUDO apt-get install -y $$PACKAGES >/dev/null 2>&1 || \
	  { $$SUDO apt-get update >/dev/null 2>&1 && $$SUDO apt-get install -y $$PACKAGES >/dev/null 2>&1; } || \
	  { echo "make: the C guest needs clang and wasi-libc: apt-get install $$PACKAGES"; exit 1; }

# The cluster tests and `make cluster` start real nats-server processes:
# Debian's package, installed as root or with password-less sudo.
install-nats-server:
	@SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y nats-server >/dev/null 2>&1 || \
	  { $$SUDO apt-get update >/dev/null 2>&1 && $$SUDO apt-get install -y nats-server >/dev/null 2>&1; } || \
	  { echo "make: the cluster tests need nats-server: install Debian's package with 'apt-get install nats-server'"; exit 1; }

# The seed demonstration: 8 heavy tasks through 4 worker processes, then the
# same 8 in-process on the event loop. Pass arguments with ARGS="--n 10000000".
# The worker is built on its own so that it stays lean (no compiler: cargo
# would otherwise unify it with the host's cranelift feature).
run: setup
	$(CARGO) build --release -p asyncer-worker
	$(CARGO) build --release -p asyncer-examples
	./target/release/seed $(ARGS)

# The other examples (see README, Examples), same build as run.
examples: setup
	$(CARGO) build --release -p asyncer-worker
	$(CARGO) build --release -p asyncer-examples

# Many tasks with progress bars driven by progress and completion updates.
fanout: examples
	./target/release/fanout $(ARGS)

# An untrusted module under limits; ARGS="MODULE.wasm TASK --input-hex ..."
# for your own, the faults guest's misbehaving tasks by default.
untrusted: examples
	./target/release/untrusted $(or $(ARGS),--demo)

# The seed example through a cluster on this machine: a nats-server and two
# worker hosts on loopback, stopped at the end.
cluster: setup
	$(CARGO) build --release -p asyncer-worker
	$(CARGO) build --release -p asyncer-cli -p asyncer-examples
	./target/release/cluster $(ARGS)

# Typed task bindings from the guest crates.
typed: examples
	./target/release/typed $(ARGS)

# Unit, integration (real worker processes) and doc tests; guests are built
# by tests/build.rs.
test: setup
	$(CARGO) test --workspace

# The benchmark table (see README, Performance). Same lean-worker build as run.
bench: setup
	$(CARGO) build --release -p asyncer-worker
	$(CARGO) build --release -p asyncer-cli -p asyncer-examples
	./target/release/bench $(ARGS)

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --no-deps --workspace
