# Partitioned prep with make -j: N parts built in parallel, then merged.
#
#   make -f examples/prep-parts.mk -j4 DATA=demo-out/data OUT=demo-out/cache N=4
#
# Every part is an ordinary `prep build --part k/N` (re-runnable: an interrupted part
# resumes where it stopped); the merge links the parts without copying shards.
PREP  ?= target/release/prep
DATA  ?= data
OUT   ?= cache
N     ?= 4
ARGS  ?= data.img_size=112 prep.fps=8 data.num_io_threads=1

PARTS := $(foreach k,$(shell seq 0 $$(($(N) - 1))),$(OUT).parts/p$(k))

$(OUT)/meta.json: $(addsuffix /meta.json,$(PARTS))
	rm -rf $(OUT)
	$(PREP) merge --out $(OUT) $(PARTS)

$(OUT).parts/p%/meta.json: $(DATA)/manifest.csv $(DATA)/segments.csv
	$(PREP) build -q --manifest $(DATA)/manifest.csv --segments $(DATA)/segments.csv \
	    --out $(OUT).parts/p$* --part $*/$(N) $(ARGS)

.PHONY: clean
clean:
	rm -rf $(OUT) $(OUT).parts
