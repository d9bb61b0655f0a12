"""The checks that gate every stage before it is published (`checks`, validated through Great
Expectations by `expectations`) and snapshot drift (`drift`)."""
