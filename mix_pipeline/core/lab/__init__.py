"""The mixture lab: proxies (n-gram and neural) trained on candidate mixtures, the search over
candidates, the recommendation and whether rankings transfer across proxies."""
