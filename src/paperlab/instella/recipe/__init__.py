"""The Instella recipe at small scale: pretrain, three-seed stage 2 souped, SFT, DPO, long."""
