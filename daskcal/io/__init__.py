"""afw FITS formats: archives, exposures, afw tables."""
