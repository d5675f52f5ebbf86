# chordfs - build, test and install.
#
#   make              build everything into build/
#   make check        every test: unit, simulation, end-to-end (bats), fuzz smoke
#   make check SAN=1  the same with ASan/UBSan (objects in build-san/)
#   make deps         install every Debian package the project needs (root)
#   make install      chordfs, chordctl, chordsim and /sbin/mount.chordfs

SAN     ?= 0
WERROR  ?= 1
PREFIX  ?= /usr/local
SBINDIR ?= /sbin
CC      ?= cc

ifeq ($(SAN),1)
B       := build-san
OPT     := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined
else
B       := build
OPT     := -O2
endif

PKGS    := fuse3 libcrypto libprotobuf-c lmdb
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN    := -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes \
           -Wmissing-prototypes -Wwrite-strings -Wvla
ifeq ($(WERROR),1)
WARN    += -Werror
endif
DEFS    := -D_GNU_SOURCE -DFUSE_USE_VERSION=31
INCS    := -I. -I$(B)/gen -I$(B)/gen/proto
CFLAGS_ALL := -std=c17 -g $(OPT) $(WARN) $(DEFS) $(INCS) $(PKG_CFLAGS) $(CFLAGS)
LDFLAGS_ALL := $(OPT) $(LDFLAGS)
LIBS    := $(PKG_LIBS) -lpthread -lm

GEN_C   := $(B)/gen/proto/chord.pb-c.c
GEN_H   := $(B)/gen/proto/chord.pb-c.h
GEN_O   := $(B)/gen/proto/chord.pb-c.o

PROTO_O := $(patsubst %.c,$(B)/%.o,$(wildcard proto/*.c)) $(GEN_O)
DHT_O   := $(patsubst %.c,$(B)/%.o,$(wildcard dht/*.c))
FS_O    := $(patsubst %.c,$(B)/%.o,$(filter-out fs/main.c,$(wildcard fs/*.c)))
MH_O    := $(patsubst %.c,$(B)/%.o,$(wildcard mount-helper/*.c))
UNIT_T  := $(patsubst tests/unit/%.c,$(B)/tests/%,$(wildcard tests/unit/test_*.c))

BINS    := $(B)/chordfs $(B)/chordctl $(B)/chordsim $(B)/mount.chordfs

.PHONY: all deps check check-unit check-e2e check-symbols fuzz fuzz-smoke \
        valgrind format format-check bench install uninstall clean
all: $(BINS) $(UNIT_T)

# ------------------------------------------------------------------ building
$(GEN_C) $(GEN_H): proto/chord.proto
	@mkdir -p $(B)/gen
	protoc-c --c_out=$(B)/gen $<

# Generated code is not ours to warn about.
$(GEN_O): $(GEN_C)
	$(CC) -std=c17 -g $(OPT) $(INCS) $(PKG_CFLAGS) -c $< -o $@

$(B)/%.o: %.c | $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(B)/libproto.a: $(PROTO_O)
	ar rcs $@ $^
$(B)/libdht.a: $(DHT_O)
	ar rcs $@ $^
$(B)/libfs.a: $(FS_O)
	ar rcs $@ $^

$(B)/chordfs: $(B)/fs/main.o $(B)/libfs.a $(B)/libdht.a $(B)/libproto.a
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)
$(B)/chordctl: $(B)/tools/chordctl.o $(B)/libdht.a $(B)/libproto.a
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)
$(B)/chordsim: $(B)/tools/chordsim.o $(B)/libdht.a $(B)/libproto.a
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)
# The mount helper links none of our modules (STYLE.md section 1).
$(B)/mount.chordfs: $(MH_O)
	$(CC) $(LDFLAGS_ALL) -o $@ $^

$(B)/tests/%: $(B)/tests/unit/%.o $(B)/libfs.a $(B)/libdht.a $(B)/libproto.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

.SECONDARY:

-include $(shell find $(B) -name '*.d' 2>/dev/null)

# ------------------------------------------------------------------- testing
check: all check-symbols
	B=$(B) tests/run.sh

check-unit: all
	B=$(B) tests/run.sh unit

check-e2e: all
	B=$(B) tests/run.sh e2e

# Every exported symbol of dht/ carries the dht_ prefix (STYLE.md section 3).
check-symbols: $(DHT_O)
	@bad=$$(nm -g --defined-only $(DHT_O) | awk 'NF==3 {print $$3}' | grep -v '^dht_' || true); \
	if [ -n "$$bad" ]; then echo "dht/ exports symbols without dht_: $$bad"; exit 1; fi

valgrind: all
	@for t in $(UNIT_T); do \
	  echo "valgrind $$t"; \
	  valgrind -q --leak-check=full --show-leak-kinds=definite,indirect \
	    --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
	    $$t >/dev/null || exit 1; \
	done; echo "valgrind: no errors, no leaks"

# libFuzzer target for the frame and message decoder (needs clang).
FUZZ_B := build-fuzz
fuzz: $(FUZZ_B)/fuzz_wire
$(FUZZ_B)/fuzz_wire: tests/fuzz/fuzz_wire.c proto/*.c proto/wire.h $(GEN_C)
	@mkdir -p $(FUZZ_B)
	clang -std=c17 -g -O1 -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=all $(DEFS) $(INCS) -I$(B)/gen \
	  -o $@ tests/fuzz/fuzz_wire.c proto/*.c $(GEN_C) -lprotobuf-c
fuzz-smoke:
	@if command -v clang >/dev/null; then \
	  $(MAKE) --no-print-directory fuzz && mkdir -p $(FUZZ_B)/corpus && \
	  $(FUZZ_B)/fuzz_wire -max_total_time=$${FUZZ_SECONDS:-20} \
	    $(FUZZ_B)/corpus tests/fuzz/corpus; \
	else echo "clang not found: fuzz smoke skipped"; fi

format:
	clang-format -i $$(git ls-files '*.c' '*.h')
format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

bench: all
	bench/run.sh

# -------------------------------------------------------------- installation
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SBINDIR)
	install -m 755 $(B)/chordfs $(B)/chordctl $(B)/chordsim $(DESTDIR)$(PREFIX)/bin/
	install -m 755 $(B)/mount.chordfs $(DESTDIR)$(SBINDIR)/mount.chordfs
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/chordfs $(DESTDIR)$(PREFIX)/bin/chordctl \
	      $(DESTDIR)$(PREFIX)/bin/chordsim $(DESTDIR)$(SBINDIR)/mount.chordfs

DEBS := build-essential pkg-config libfuse3-dev fuse3 libssl-dev \
        libprotobuf-c-dev protobuf-c-compiler liblmdb-dev lmdb-utils bats \
        bats-assert bats-support attr sshfs clang libclang-rt-dev valgrind \
        iproute2 procps psmisc util-linux openssh-server
deps:
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(DEBS)

clean:
	rm -rf build build-san build-fuzz

# The mount helper's unit test links only the helper's option code (plain
# libc), not libfs/libdht/libproto.
$(B)/tests/test_mount_helper: $(B)/tests/unit/test_mount_helper.o \
                              $(B)/mount-helper/opts.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^

# Store benchmark: puts/s with and without an fsync per commit (bench/store.sh).
# Links only the store and what it uses, not all of libdht.
$(B)/storebench: $(B)/tools/storebench.o $(B)/dht/store.o $(B)/dht/id.o \
                 $(B)/dht/log.o $(B)/libproto.a
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

# DHT benchmark through the network driver: 3 peers vs 1 (bench/dht.sh).
$(B)/chordbench: $(B)/tools/chordbench.o $(B)/libdht.a $(B)/libproto.a
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)
