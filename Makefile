PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test lint demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -m "not slow"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: venv
	rm -rf demo-repo
	$(BIN)/daskcal demo make demo-repo --visits 4 --ccds 0..8^10..20 --size small
	$(BIN)/daskcal info demo-repo --rerun demo --id field=NGC604 tract=0
	$(BIN)/calibrateExposure.py demo-repo --rerun demo:calib \
	    --id field=NGC604 tract=0 ccd=0..8^10..103 --batch-type=smp --cores=2 \
	    --clobber-config --clobber-versions --quicklook
	$(BIN)/calibrateCatalog.py demo-repo --rerun demo:calib \
	    --id field=NGC604 tract=0 ccd=0..8^10..103 --batch-type=smp --cores=2 \
	    --clobber-config --clobber-versions
	$(BIN)/daskcal hats demo-repo --rerun calib
	$(BIN)/daskcal qa demo-repo --rerun calib
	@echo
	$(BIN)/daskcal info demo-repo --rerun demo:calib --id field=NGC604 tract=0
	@echo
	@echo "CALEXP/CALSRC: demo-repo/rerun/calib/calibrated/0000/<pointing>/<filter>/"
	@echo "Parquet:       demo-repo/rerun/calib/calibrated/parquet/src (hive: tract=, filter=)"
	@echo "Quick-looks:   demo-repo/rerun/calib/calibrated/0000/quicklook/"
	@echo "HATS (LSDB):   demo-repo/rerun/calib/calibrated/hats/calsrc"
	@echo "QA report:     demo-repo/rerun/calib/calibrated/qa/index.html"

clean:
	rm -rf $(VENV) demo-repo .pytest_cache
