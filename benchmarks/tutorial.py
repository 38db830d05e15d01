"""The 60-line tutorial script lenet started from (its network is lenet's `seed`, its recipe `--recipe
tutorial`), unchanged except that it reads the MNIST copy shipped with lenet offline: the shipped `.gz`
files go into a temporary MNIST/raw/, where torchvision's `download=True` finds them (their MD5 matches)
and only extracts them. Prints the tutorial's lines and, at the end, its wall time from process start."""

import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.optim as optim
import torchvision.datasets as datasets
import torchvision.transforms as transforms

from lenet.bench import tutorial_dataset  # copies the shipped .gz files into ROOT/MNIST/raw/


def process_seconds() -> float:
    start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    return float(Path("/proc/uptime").read_text().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")


# 定义LeNet-5模型
class LeNet5(nn.Module):
    def __init__(self):
        super(LeNet5, self).__init__()  # noqa: UP008 (the tutorial's code, verbatim)
        self.conv1 = nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5, stride=1)
        self.pool1 = nn.AvgPool2d(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(in_channels=6, out_channels=16, kernel_size=5, stride=1)
        self.pool2 = nn.AvgPool2d(kernel_size=2, stride=2)
        self.fc1 = nn.Linear(in_features=16 * 4 * 4, out_features=120)
        self.fc2 = nn.Linear(in_features=120, out_features=84)
        self.fc3 = nn.Linear(in_features=84, out_features=10)

    def forward(self, x):
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        x = x.view(-1, 16 * 4 * 4)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        x = self.fc3(x)
        return x


root = tempfile.mkdtemp(prefix="tutorial-mnist-")
tutorial_dataset(Path(root))
train_dataset = datasets.MNIST(root=root, train=True, transform=transforms.ToTensor(), download=True)
test_dataset = datasets.MNIST(root=root, train=False, transform=transforms.ToTensor())

# 定义数据加载器
train_loader = torch.utils.data.DataLoader(dataset=train_dataset, batch_size=64, shuffle=True)
test_loader = torch.utils.data.DataLoader(dataset=test_dataset, batch_size=64, shuffle=False)

# 定义模型、损失函数和优化器
model = LeNet5()
criterion = nn.CrossEntropyLoss()
optimizer = optim.Adam(model.parameters())

# 训练模型
t0 = time.perf_counter()
for epoch in range(10):
    for i, (images, labels) in enumerate(train_loader):
        optimizer.zero_grad()
        outputs = model(images)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()

        if (i + 1) % 100 == 0:
            print('Epoch [{}/{}], Step [{}/{}], Loss: {:.4f}'.format(  # noqa: UP032 (verbatim)
                epoch + 1, 10, i + 1, len(train_loader), loss.item()))


# 测试模型
model.eval()
with torch.no_grad():
    correct = 0
    total = 0
    for images, labels in test_loader:
        outputs = model(images)
        _, predicted = torch.max(outputs.data, 1)
        total += labels.size(0)
        correct += (predicted == labels).sum().item()

    print('Test Accuracy: {:.2f}%'.format(100 * correct / total))  # noqa: UP032 (verbatim)
print(f"Training loop: {time.perf_counter() - t0:.1f} s")
print(f"Wall time: {process_seconds():.1f} s from process start")
