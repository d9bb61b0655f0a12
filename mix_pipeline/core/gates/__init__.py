"""The checks that gate every stage before it is published (`checks`) and snapshot drift
(`drift`)."""
