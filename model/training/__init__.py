"""Training: feature caching (`livefoley prepare`) and the two stages (`livefoley train stage1|ect`)."""
