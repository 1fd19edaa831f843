# Two commands set everything up on a fresh machine:
#   make demo   the main job, on a throwaway etcd and a locally built container
#   make test   installs what is missing, then fmt, clippy and the whole suite
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
DESTDIR ?=
TEST_IMAGE := discovery-test/busybox:$(shell cat tests/image/TAG)
IMAGE_CTX := target/test-image

# `make install`: PREFIX and DESTDIR as usual; PROFILE=debug installs what
# `cargo build` made instead of building a release; PREBUILT=1 installs the
# release built already, without running cargo (the Debian package's build
# does: debhelper's environment, CFLAGS and all, would rebuild every crate
# with a C build script).
PROFILE ?= release
# Where cargo puts what it builds (it honours CARGO_TARGET_DIR; so do we).
TARGET := $(or $(CARGO_TARGET_DIR),target)
# Where systemd looks: PREFIX/lib/systemd/system for /usr and /usr/local,
# /etc/systemd/system for any other prefix.
UNITDIR ?= $(if $(filter /usr /usr/local,$(PREFIX)),$(PREFIX)/lib/systemd/system,/etc/systemd/system)
SHAREDIR ?= $(PREFIX)/share/sidekick
DOCDIR ?= $(PREFIX)/share/doc/sidekick
# The Debian package puts the environment example in DOCDIR/examples.
ENVEXAMPLEDIR ?= $(SHAREDIR)
MANDIR ?= $(PREFIX)/share/man
# Where each shell looks: bash-completion and fish search every
# XDG_DATA_DIRS entry (/usr/local/share too); Debian's zsh has
# vendor-completions for /usr and site-functions for everything else.
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(if $(filter /usr,$(PREFIX)),$(PREFIX)/share/zsh/vendor-completions,$(PREFIX)/share/zsh/site-functions)
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
# The man pages' date: the commit's, so the same commit gives the same pages.
DOCDATE := $(shell git log -1 --format=%cs 2>/dev/null)
DOCGEN = $(TARGET)/$(PROFILE)/sidekick-docgen

.PHONY: all build release deps image sweep fmt-check clippy test test-only doc bench demo install deb clean

all: build

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release -p sidekick -p sidekick-docgen

deps:
	@./.ci/deps.sh

# The end-to-end image: FROM scratch with Debian's static busybox. Built
# locally because no registry is reachable; rebuilt only when missing.
image: deps
	@if ! docker image inspect $(TEST_IMAGE) >/dev/null 2>&1; then \
	  rm -rf $(IMAGE_CTX) && mkdir -p $(IMAGE_CTX) && \
	  cp tests/image/* $(IMAGE_CTX)/ && cp /bin/busybox $(IMAGE_CTX)/busybox && \
	  docker build -q -t $(TEST_IMAGE) $(IMAGE_CTX) >/dev/null && \
	  echo "image: built $(TEST_IMAGE)"; \
	fi

# Leftovers of a test run of THIS checkout that was killed before its own
# cleanup ran: its containers carry label discovery-test=$(CURDIR) and its
# etcds keep their data under $TMPDIR/discovery-test<checkout, / as _>
# (tests/src/lib.rs). Another checkout's run on the same machine is left alone.
SCRATCH := $(or $(TMPDIR),/tmp)/discovery-test$(subst /,_,$(CURDIR))
sweep:
	@ids=$$(docker ps -aq --filter 'label=discovery-test=$(CURDIR)' 2>/dev/null); \
	  if [ -n "$$ids" ]; then docker rm -f $$ids >/dev/null; fi
	@if command -v podman >/dev/null 2>&1; then \
	  ids=$$(podman ps -aq --filter 'label=discovery-test=$(CURDIR)' 2>/dev/null); \
	  if [ -n "$$ids" ]; then podman rm -f -t 0 $$ids >/dev/null; fi; \
	fi
	@# The [t] keeps the pattern from matching this very command line.
	@pkill -KILL -f -- '--data-dir=$(SCRATCH)/etcd-tes[t]-' 2>/dev/null || true
	@pkill -TERM -f -- 'podman system service --time=0 unix://$(SCRATCH)/podman-tes[t]-' 2>/dev/null || true

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The core set `make test` runs again against etcd 3.5, for plain `cargo test`
# (nextest reads the same list from .config/nextest.toml, profile etcd35,
# which says why faults::leader_killed_ten_times is skipped there).
ETCD35_CORE := $(foreach t,harness lib_config lib_connect lib_register lib_watch sidekick sidekick_docker_faults docker_tls podman discover v2_parity faults failover security metrics bad_input,--test $(t))

# The tests start the binaries from target/debug, so build them first.
# Both etcd versions: Debian's 3.4 for everything, 3.5 for the core set.
test-only:
	$(CARGO) build --workspace --bins --examples
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace && \
	  echo "test: the core set again, against etcd 3.5 (.config/nextest.toml, profile etcd35)" && \
	  DISCOVERY_TEST_ETCD=3.5 $(CARGO) nextest run --workspace --profile etcd35; \
	else \
	  $(CARGO) test --workspace -- --test-threads 6 && \
	  DISCOVERY_TEST_ETCD=3.5 $(CARGO) test -p discovery-tests $(ETCD35_CORE) -- --test-threads 6 --skip leader_killed_ten_times; \
	fi
	$(CARGO) test --workspace --doc

test: deps image sweep fmt-check clippy doc test-only
	@$(MAKE) --no-print-directory sweep

install:
	@if [ "$(PROFILE)" = release ] && [ -z "$(PREBUILT)" ]; then $(CARGO) build --release -p sidekick -p sidekick-docgen; fi
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SHAREDIR)/examples $(DESTDIR)$(ENVEXAMPLEDIR)
	install -m 0755 $(TARGET)/$(PROFILE)/sidekick $(TARGET)/$(PROFILE)/discover $(DESTDIR)$(PREFIX)/bin/
	@# The units name /usr/local; point them at PREFIX.
	for u in units/*.service; do \
	  sed 's|/usr/local/|$(PREFIX)/|g' $$u > $(DESTDIR)$(UNITDIR)/$$(basename $$u) && chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$u); \
	done
	install -m 0644 units/sidekick.env.example $(DESTDIR)$(ENVEXAMPLEDIR)/
	install -d $(DESTDIR)$(DOCDIR) && install -m 0644 README.md $(DESTDIR)$(DOCDIR)/
	for d in node-web node-worker node-watch-inline; do \
	  install -d $(DESTDIR)$(SHAREDIR)/examples/$$d && install -m 0644 examples/$$d/*.js $(DESTDIR)$(SHAREDIR)/examples/$$d/; \
	done
	@# discover render's nginx example: the template, and its unit pointed at PREFIX.
	install -d $(DESTDIR)$(SHAREDIR)/examples/nginx-upstream
	install -m 0644 examples/nginx-upstream/upstream.conf.j2 $(DESTDIR)$(SHAREDIR)/examples/nginx-upstream/
	for u in web-lb.service web-lb-nginx.service; do \
	  sed 's|/usr/local/|$(PREFIX)/|g' examples/nginx-upstream/$$u > $(DESTDIR)$(UNITDIR)/$$u && chmod 0644 $(DESTDIR)$(UNITDIR)/$$u; \
	done
	@# Man pages and completions, generated from the definitions the
	@# binaries parse with (packaging/docgen); FILES lists the units just installed.
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	@gen=$$(mktemp -d) && trap 'rm -rf "$$gen"' EXIT && set -e && \
	  $(DOCGEN) man $$gen/man --units $(DESTDIR)$(UNITDIR) --unit-dir $(UNITDIR) --bin-dir $(PREFIX)/bin \
	    --env-example $(ENVEXAMPLEDIR)/sidekick.env.example --readme $(DOCDIR)/README.md --date '$(DOCDATE)' && \
	  $(DOCGEN) completions $$gen/completions && \
	  install -m 0644 $$gen/man/*.1 $(DESTDIR)$(MANDIR)/man1/ && \
	  install -m 0644 $$gen/completions/bash/* $(DESTDIR)$(BASHCOMPDIR)/ && \
	  install -m 0644 $$gen/completions/zsh/* $(DESTDIR)$(ZSHCOMPDIR)/ && \
	  install -m 0644 $$gen/completions/fish/* $(DESTDIR)$(FISHCOMPDIR)/

# `make deb`: sidekick_VERSION_ARCH.deb from a release build, checked by
# lintian when it is installed. packaging/build-deb says how and why
# (dpkg-deb through debhelper over a staged `make install PREFIX=/usr`);
# PROFILE=debug packages the debug build (what the tests install),
# VERSION=, DEB_OUT= and DEB_COMPRESS= are passed on.
deb:
	@if [ "$(PROFILE)" = release ]; then $(CARGO) build --release -p sidekick -p sidekick-docgen; fi
	@deb=$$(PROFILE=$(PROFILE) TARGET=$(TARGET) VERSION=$(VERSION) DEB_OUT=$(DEB_OUT) DEB_COMPRESS="$(DEB_COMPRESS)" packaging/build-deb | tail -n1) && echo "deb: built $$deb" && \
	  if command -v lintian >/dev/null 2>&1; then \
	    lintian --fail-on error,warning "$$deb" && echo "deb: lintian found no error or warning"; \
	  else echo "deb: lintian is not installed, so the package was not checked (apt-get install lintian)"; fi

# Benchmarks against the chapter's bash sidekick, etcdctl and a bare watch;
# rewrites BENCHMARKS.md (about 10 minutes; run on an otherwise idle machine).
bench: deps image
	$(CARGO) build --release -p sidekick -p discovery-tests --bins
	$(TARGET)/release/bench --out BENCHMARKS.md

# The main job, narrated, on a throwaway etcd and a locally built container.
demo: deps image
	@./examples/demo.sh

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

clean:
	$(CARGO) clean
	-docker rmi $(TEST_IMAGE)
