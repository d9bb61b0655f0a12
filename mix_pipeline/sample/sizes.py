"""How big the corpus, its sources, its files and its documents are."""

MB = 1_000_000
SOURCE_SHARES = {"web": 0.50, "books": 0.20, "code": 0.15, "papers": 0.15}
FILE_TARGET_BYTES = int(2.5 * MB)  # uncompressed text per output file
MIN_FILES = {"web": 2, "books": 1, "papers": 1}

WEB_DOC_BYTES = (1_000, 8_000)
BOOK_DOC_BYTES = (10_000, 58_000)
PAPER_DOC_BYTES = (6_000, 16_000)
LONG_DOC_BYTES = (200_000, 600_000)
# Expected mean size of a clean doc (the generator overshoots its target by about
# half a paragraph); used to reserve budget for duplicates made after the fact.
WEB_MEAN_BYTES = 4_700
BOOK_MEAN_BYTES = 34_500
PAPER_MEAN_BYTES = 12_900
